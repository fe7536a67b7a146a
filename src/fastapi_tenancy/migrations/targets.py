"""Where each isolation strategy keeps a tenant's tables, as a connection Alembic can run on.

* row: the shared tables in the central database, migrated once (no tenant);
* schema on PostgreSQL: the central database (or the database of the tenant's server, with
  ``database_servers``); env.py points the search path at the tenant's schema and keeps
  ``alembic_version`` there;
* schema on MariaDB/MySQL: the tenant's database on the central server (or its own server),
  through a connection made for it, so unqualified names resolve there;
* database: the tenant's own database (its explicit URL, its server's, or the URL template).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.migrations.locks import SHARED_LOCK_KEY
from fastapi_tenancy.models import Tenant

if TYPE_CHECKING:
    from fastapi_tenancy._wiring import OperationsSettings
    from fastapi_tenancy.tenancy import Tenancy

__all__ = ["MigrationTarget", "connect", "target_for"]


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """One set of tables to migrate: whose they are, where, and which lock guards them.

    ``url`` is ``None`` for the central database; ``schema`` is the PostgreSQL schema env.py
    targets, ``None`` when the connection's own database holds the tables.
    """

    tenant: Tenant | None
    url: str | None
    schema: str | None
    lock_key: str

    @property
    def identifier(self) -> str | None:
        return self.tenant.identifier if self.tenant is not None else None


def target_for(tenancy: Tenancy, tenant: Tenant | None) -> MigrationTarget:
    """Where ``tenant``'s tables are under ``tenancy``'s isolation strategy."""
    settings = tenancy.settings.operations
    strategy = settings.isolation_strategy
    if tenant is None:
        if strategy != "row":
            raise ConfigurationError(f"{strategy} isolation migrates tenants, not shared tables")
        return MigrationTarget(tenant=None, url=None, schema=None, lock_key=SHARED_LOCK_KEY)
    name = checked_storage_name(tenant.storage_name)
    server = tenancy.servers.server_of(tenant)
    if strategy == "schema":
        # The tenant's server (`database_servers`), or the central database.
        server_url = settings.database_url if server is None else server.url.get_secret_value()
        if make_url(server_url).get_backend_name() == "postgresql":
            url = None if server is None else server_url
            return MigrationTarget(tenant=tenant, url=url, schema=name, lock_key=tenant.id)
        return MigrationTarget(
            tenant=tenant,
            url=make_url(server_url).set(database=name).render_as_string(hide_password=False),
            schema=None,
            lock_key=tenant.id,
        )
    if strategy == "database":
        return MigrationTarget(
            tenant=tenant,
            url=_tenant_url(tenancy, settings, tenant),
            schema=None,
            lock_key=tenant.id,
        )
    raise ConfigurationError("row isolation migrates the shared tables once, not each tenant")


def _tenant_url(tenancy: Tenancy, settings: OperationsSettings, tenant: Tenant) -> str:
    """Database isolation: ``TENANCY_DATABASE_URL_<TENANT>`` first, then its server's URL."""
    override = settings.tenant_database_urls.get(tenant.identifier)
    if override is not None:
        return override.get_secret_value()
    return tenancy.servers.tenant_database_url(tenant, settings.database_url_template)


@asynccontextmanager
async def connect(tenancy: Tenancy, target: MigrationTarget) -> AsyncIterator[AsyncConnection]:
    """A connection to ``target``'s database, closed (and its engine disposed) on exit."""
    if target.url is None:
        async with tenancy.engine.connect() as conn:
            yield conn
        return
    # A one-connection engine per tenant: the app's engine cache and pools are left alone.
    engine = tenancy.settings.operations.engine(target.url)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()

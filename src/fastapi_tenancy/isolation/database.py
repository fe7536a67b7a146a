"""⑤ Database isolation: each tenant has a database of its own.

The tenant's URL is its explicit ``database_url`` (a database the operator made, perhaps on
another server) or ``database_url_template`` with the tenant's database name. Engines live in a
bounded `EngineLRU`: an engine in use is never disposed, evicted idle engines are disposed in the
background, and a global budget caps the server connections of all tenant engines together (a
tenant's pool opens connections on demand and the least recently used idle connection of any
tenant is closed, in the background, to keep room).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager

from sqlalchemy import delete, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy._secrets import redact_url
from fastapi_tenancy.isolation.engine_lru import EngineLRU
from fastapi_tenancy.isolation.naming import assign_storage_name, checked_storage_name
from fastapi_tenancy.isolation.ownership import check_owner, owner_mark
from fastapi_tenancy.isolation.placement import ServerPool
from fastapi_tenancy.isolation.servers import create_database, database_mark, drop_database
from fastapi_tenancy.isolation.session import TENANT_INFO_KEY, TenantSession
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.isolation.templates import DatabaseTemplate
from fastapi_tenancy.isolation.unavailable import unavailable_as_503
from fastapi_tenancy.models import Tenant

__all__ = ["DatabaseIsolation"]


class DatabaseIsolation:
    """One database per tenant, reached through a bounded cache of small engines.

    Example::

        isolation = DatabaseIsolation(
            TenantTables(Base.metadata),
            engine_factory=lambda url: create_async_engine(url, pool_size=2),
            url_template="postgresql+asyncpg://app@db:5432/{database}",
        )
    """

    def __init__(
        self,
        tables: TenantTables,
        *,
        engine_factory: Callable[[str], AsyncEngine],
        url_template: str | None = None,
        storage_prefix: str = "tenant_",
        max_engines: int = 100,
        connection_budget: int = 50,
        budget_timeout: float = 30.0,
        servers: ServerPool | None = None,
    ) -> None:
        self._tables = tables
        self._engine_factory = engine_factory
        self._url_template = url_template
        self._servers = servers if servers is not None else ServerPool()
        self._storage_prefix = storage_prefix
        self._template = DatabaseTemplate(storage_prefix)
        self._engines = EngineLRU(
            self._new_engine,
            max_engines=max_engines,
            connection_budget=connection_budget,
            budget_timeout=budget_timeout,
        )

    @property
    def engines(self) -> EngineLRU:
        return self._engines

    async def start(self) -> None:
        """Nothing to open: tenant engines are created on first use."""

    async def close(self) -> None:
        """Dispose every tenant engine; no tenant connection stays open."""
        await self._engines.close()

    def assign_storage(self, tenant: Tenant) -> Tenant:
        return assign_storage_name(tenant, self._storage_prefix)

    @asynccontextmanager
    async def session(self, tenant: Tenant) -> AsyncIterator[AsyncSession]:
        url = self._url(tenant)
        async with (
            # The URL travels with the lease: it builds the engine on a miss and is not kept.
            self._engines.lease(_engine_key(tenant, url), url) as engine,
            AsyncSession(
                bind=engine,
                sync_session_class=TenantSession,
                expire_on_commit=False,
                info={TENANT_INFO_KEY: tenant.id},
            ) as session,
        ):
            yield session

    async def provision(self, tenant: Tenant) -> None:
        """Create the tenant's database, marked as its own, and its tables; safe to repeat.

        A database an interrupted attempt made for this tenant is reused; one that belongs to
        anyone else raises `StorageConflict`, untouched. An explicit ``database_url`` names a
        database the operator made: it is used as it is, never created or dropped.
        """
        name = checked_storage_name(tenant.storage_name)
        url = self._url(tenant)
        created = copied = False
        with _reachable(url):
            if tenant.database_url is None:
                found = await database_mark(url, name, expected=owner_mark(tenant))
                if found is None:
                    copied = await self._template.create(
                        url, name, self._tables.metadatas(), owner_mark(tenant)
                    )
                    if not copied:
                        await create_database(url, name, mark=owner_mark(tenant))
                    created = True
                else:
                    tables = 0 if found else await self._count_tables(url)
                    check_owner(f"database {name}", tenant, found, tables)
            try:
                if not copied:  # a copy of the template has its tables already
                    await self._on_tables(url, create=True)
            except BaseException:
                if created:
                    await drop_database(url, name)
                raise

    async def purge(self, tenant: Tenant) -> None:
        name = checked_storage_name(tenant.storage_name)
        url = self._url(tenant)
        await self._engines.discard(_engine_key(tenant, url))
        with _reachable(url):
            if tenant.database_url is None:
                found = await database_mark(url, name, expected=owner_mark(tenant))
                if found:
                    check_owner(f"database {name}", tenant, found, 0)
                if found is not None:
                    await drop_database(url, name)
            else:
                await self._on_tables(url, create=False, tenant_id=tenant.id)

    async def forget(self, tenant: Tenant) -> None:
        """Drop this process's engine for ``tenant``'s database (e.g. once it has moved away)."""
        await self._engines.discard(_engine_key(tenant, self._url(tenant)))

    async def _count_tables(self, url: str) -> int:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return len(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    async def _on_tables(self, url: str, *, create: bool, tenant_id: str | None = None) -> None:
        """Create or drop the metadata's tables in the database at ``url``.

        Dropping also deletes ``tenant_id``'s rows from every table left with a ``tenant_id``
        column (tables Alembic owns, which no metadata names), so nothing of the tenant survives
        a purge of an explicit database; other rows stay, since the operator made that database.
        """
        # A one-off connection: provisioning and purging never touch the engine cache.
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                for metadata in self._tables.metadatas():
                    await conn.run_sync(metadata.create_all if create else metadata.drop_all)
                if tenant_id is not None:
                    for table in await conn.run_sync(self._tables.existing_scoped_tables):
                        await conn.execute(delete(table).where(table.c.tenant_id == tenant_id))
        finally:
            await engine.dispose()

    def _url(self, tenant: Tenant) -> str:
        return self._servers.tenant_database_url(tenant, self._url_template)

    def _new_engine(self, url: str) -> AsyncEngine:
        return self._engine_factory(url)


def _engine_key(tenant: Tenant, url: str) -> str:
    # The URL is part of the key: once a tenant moves to another server (a new URL on its
    # record), every process builds an engine for the new server with the next record it loads,
    # instead of reusing the one cached for the old server under the same database name.
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{checked_storage_name(tenant.storage_name)}@{digest}"


def _reachable(url: str) -> AbstractContextManager[None]:
    # The tenant's server being unreachable is a 503-kind failure, reported without the password.
    return unavailable_as_503(f"tenant database server at {redact_url(url)}")

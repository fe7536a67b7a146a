"""Where one tenant's data lives under a runtime's configuration, in the terms the tools need."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.isolation.rls import BIND_TENANT
from fastapi_tenancy.isolation.row import RowIsolation
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["Storage", "locate", "rename_schema"]

Strategy = Literal["row", "schema", "database"]


@dataclass(frozen=True)
class Storage:
    """A tenant's storage: the database holding it, and the schema (PostgreSQL schema
    isolation) or ``tenant_id`` filter (row isolation) that cuts its data out of that database.
    """

    strategy: Strategy
    url: URL
    schema: str | None = None
    tenant_id: str | None = None  # row isolation: the rows are this tenant's among others
    # Row isolation with PostgreSQL row-level security: each transaction binds the tenant, or
    # the policies would hide its rows (an empty backup) from a role they apply to.
    rls: bool = False

    @property
    def backend(self) -> str:
        """``postgresql``, ``mysql`` (MariaDB too) or ``sqlite``."""
        return self.url.get_backend_name()

    @property
    def name(self) -> str:
        """The schema or database the tenant owns ("" under row isolation)."""
        if self.strategy == "row":
            return ""
        return self.schema or self.url.database or ""

    @asynccontextmanager
    async def connect(
        self, *, begin: bool = True, snapshot: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A one-off connection to the database (no pool left behind), in a transaction.

        ``snapshot``: a repeatable-read one, so everything it reads is one consistent moment.
        """
        options = {}
        if snapshot and self.backend != "sqlite":  # SQLite transactions are serializable
            options["isolation_level"] = "REPEATABLE READ"
        engine = create_async_engine(self.url, poolclass=NullPool, **options)
        try:
            async with engine.connect() as conn:
                if begin:
                    async with conn.begin():
                        if self.rls and self.tenant_id is not None:
                            await conn.execute(BIND_TENANT, {"tenant_id": self.tenant_id})
                        yield conn
                else:
                    yield conn
        finally:
            await engine.dispose()


def locate(tenancy: Tenancy, tenant: Tenant) -> Storage:
    """Where ``tenant``'s data is under ``tenancy``'s isolation strategy and server pool."""
    settings = tenancy.settings.operations
    strategy: Strategy = settings.isolation_strategy
    central = tenancy.engine.url
    if strategy == "row":
        rls = isinstance(tenancy.isolation, RowIsolation) and tenancy.isolation.row_level_security
        return Storage("row", central, tenant_id=tenant.id, rls=rls)
    name = checked_storage_name(tenant.storage_name)
    servers = tenancy.servers
    if strategy == "schema":
        server = servers.server_of(tenant)
        home = central if server is None else make_url(server.url.get_secret_value())
        if home.get_backend_name() == "postgresql":
            return Storage("schema", home, schema=name)
        # On MariaDB/MySQL a tenant schema is a database on its server.
        return Storage("schema", home.set(database=name))
    if isinstance(tenancy.isolation, DatabaseIsolation):
        # The isolation's own answer: a TENANCY_DATABASE_URL_<TENANT> variable wins there.
        url = tenancy.isolation.tenant_url(tenant)
    else:
        url = servers.tenant_database_url(tenant, settings.database_url_template)
    return Storage("database", make_url(url))


async def schema_exists(conn: AsyncConnection, schema: str) -> bool:
    found = await conn.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": schema}
    )
    return found.first() is not None


def rename_schema(source: Path, target: Path, old: str, new: str) -> None:
    """Copy the plain ``pg_dump`` script ``source`` to ``target`` with schema ``old`` as ``new``.

    Names are replaced in statements only, never inside ``COPY`` data, so a row that happens to
    hold the schema's name is restored as it was. Storage names are ``[a-z][a-z0-9_]*`` ending in
    a 16-digit hash, so a whole-word match in a statement is the schema itself.
    """
    pattern = re.compile(rf"\b{re.escape(checked_storage_name(old))}\b")
    replacement = checked_storage_name(new)
    in_data = False
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as out:
        for line in src:
            if in_data:
                in_data = line.rstrip("\n") != "\\."
            else:
                line = pattern.sub(replacement, line)
                in_data = line.startswith("COPY ") and line.rstrip().endswith("FROM stdin;")
            out.write(line)

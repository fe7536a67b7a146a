"""⑤ Database isolation: each tenant has a database of its own.

The tenant's URL is its explicit ``database_url`` (a database the operator made, perhaps on
another server) or ``database_url_template`` with the tenant's database name. Engines live in a
bounded `EngineLRU`: an engine in use is never disposed, evicted idle engines are disposed in the
background, and a global budget caps the server connections of all tenant engines together (a
tenant's pool opens connections on demand and the least recently used idle connection of any
tenant is closed, in the background, to keep room).

Shared tables (models without `TenantScoped`, `fastapi_tenancy.isolation.tables`) live once, in
the central database: they are created there once per process, never in a tenant's database, and
foreign keys from tenant tables to them are left out of a tenant database's DDL (a database
cannot reference another's tables). A tenant session sends a statement that names only shared
tables to the central engine and every other statement to the tenant's; one statement naming
both (a join from a tenant row to ``plans``) cannot run on either and raises
`CrossDatabaseStatement` before any SQL is sent. Writes to shared tables commit on their own
connection, not atomically with the tenant's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Table, delete, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import visitors

from fastapi_tenancy._secrets import redact_url
from fastapi_tenancy.exceptions import TenancyError
from fastapi_tenancy.isolation.engine_lru import EngineLRU
from fastapi_tenancy.isolation.naming import assign_storage_name, checked_storage_name
from fastapi_tenancy.isolation.ownership import check_owner, owner_mark
from fastapi_tenancy.isolation.placement import ServerPool
from fastapi_tenancy.isolation.servers import create_database, database_mark, drop_database
from fastapi_tenancy.isolation.session import TENANT_INFO_KEY, TenantSession
from fastapi_tenancy.isolation.tables import (
    TenantTables,
    create_tables,
    omit_shared_references,
    shared_tables_lock,
)
from fastapi_tenancy.isolation.templates import DatabaseTemplate
from fastapi_tenancy.isolation.unavailable import unavailable_as_503
from fastapi_tenancy.models import Tenant

__all__ = ["CrossDatabaseStatement", "DatabaseIsolation"]

_SHARED_INFO_KEY = "fastapi_tenancy.shared_tables"


class CrossDatabaseStatement(TenancyError):
    """A statement names both a shared table (central database) and a tenant table.

    Under database isolation they live in different databases; query them one after the other
    (load the ``plans`` rows by the ids the tenant rows hold).
    """


class _DatabaseTenantSession(TenantSession):
    """A tenant session that sends statements on shared tables to the central database."""

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kw: Any,
    ) -> Engine | Connection:
        shared: dict[Table, Engine] | None = self.info.get(_SHARED_INFO_KEY)
        if bind is not None or not shared:
            return super().get_bind(mapper, clause=clause, bind=bind, **kw)
        tables: set[Table] = set()
        if mapper is not None:
            found = getattr(mapper, "tables", None)
            if found is None and hasattr(mapper, "__table__"):
                found = [mapper.__table__]
            tables.update(t for t in found or () if isinstance(t, Table))
        if clause is not None:
            tables.update(obj for obj in visitors.iterate(clause) if isinstance(obj, Table))
        on_shared = {table for table in tables if table in shared}
        if not on_shared:
            return self._tenant_bind()
        if on_shared != tables:
            raise CrossDatabaseStatement(
                f"one statement names shared tables ({_names(on_shared)}) and tenant tables "
                f"({_names(tables - on_shared)}): under database isolation they live in "
                "different databases; query them separately"
            )
        return shared[next(iter(on_shared))]

    def _tenant_bind(self) -> Engine | Connection:
        assert self.bind is not None  # tenant sessions are always opened with their engine
        return self.bind


def _names(tables: set[Table]) -> str:
    return ", ".join(sorted(table.name for table in tables))


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
        shared_engine: AsyncEngine | None = None,
        tenant_urls: Mapping[str, SecretStr] | None = None,
        template: DatabaseTemplate | None = None,
    ) -> None:
        self._tables = tables
        # URLs from TENANCY_DATABASE_URL_<TENANT>: before the stored URL and the template.
        self._tenant_urls: Mapping[str, SecretStr] = dict(tenant_urls or {})
        # The central database's engine, where shared tables live; without it (an isolation
        # built on its own) a tenant's sessions reach only the tenant's database.
        self._shared_engine = shared_engine
        self._shared_ready = False
        self._shared_lock = asyncio.Lock()
        self._shared_binds: tuple[list[Table], dict[Table, Engine]] = ([], {})
        self._engine_factory = engine_factory
        self._url_template = url_template
        self._servers = servers if servers is not None else ServerPool()
        self._storage_prefix = storage_prefix
        # `alembic_config`: an `AlembicDatabaseTemplate`, tenants made at the Alembic head.
        self._template = template if template is not None else DatabaseTemplate(storage_prefix)
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
                sync_session_class=_DatabaseTenantSession,
                expire_on_commit=False,
                info={TENANT_INFO_KEY: tenant.id, _SHARED_INFO_KEY: self._shared()},
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
        await self.create_shared_tables()
        with _reachable(url), omit_shared_references():
            if not self._explicit(tenant):
                mark = owner_mark(tenant)
                metadatas = self._tables.metadatas()
                if tenant.provisioning_attempts == 0:
                    # A first attempt (`create_tenant`) has a new storage name, so nothing can
                    # be there: the copy is tried before looking (a connection and its queries
                    # saved). Should it fail, the checks below decide, as on a retry.
                    copied = created = await self._template.create(url, name, metadatas, mark)
                if not copied:
                    found = await database_mark(url, name, expected=mark)
                    if found is None:
                        copied = await self._template.create(url, name, metadatas, mark)
                        if not copied:
                            await create_database(url, name, mark=mark)
                        created = True
                    else:
                        tables = 0 if found else await self._count_tables(url)
                        check_owner(f"database {name}", tenant, found, tables)
            try:
                if not copied:  # a copy of the template has its tables already
                    await self._on_tables(url, create=True)
                    await self._template.complete(url, tenant)
            except BaseException:
                if created:
                    await drop_database(url, name)
                raise

    async def purge(self, tenant: Tenant) -> None:
        name = checked_storage_name(tenant.storage_name)
        url = self._url(tenant)
        await self._engines.discard(_engine_key(tenant, url))
        with _reachable(url):
            if not self._explicit(tenant):
                found = await database_mark(url, name, expected=owner_mark(tenant))
                if found:
                    check_owner(f"database {name}", tenant, found, 0)
                if found is not None:
                    await drop_database(url, name)
            else:
                await self._on_tables(url, create=False, tenant_id=tenant.id)

    def tenant_url(self, tenant: Tenant) -> str:
        """The URL of ``tenant``'s database, as its sessions reach it (for backups and moves)."""
        return self._url(tenant)

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
        tables = self._tables.tenant_tables()
        try:
            async with engine.begin() as conn:
                if create:
                    with omit_shared_references():
                        await conn.run_sync(create_tables, tables)
                else:
                    await conn.run_sync(_drop_tables, tables)
                if tenant_id is not None:
                    for table in await conn.run_sync(self._tables.existing_scoped_tables):
                        await conn.execute(delete(table).where(table.c.tenant_id == tenant_id))
        finally:
            await engine.dispose()

    async def create_shared_tables(self) -> None:
        """Create the missing shared tables in the central database, once per process."""
        if self._shared_ready:
            return
        async with self._shared_lock:
            if self._shared_ready:
                return
            shared = self._tables.shared_tables()
            if shared and self._shared_engine is not None:
                async with self._shared_engine.begin() as conn, shared_tables_lock(conn):
                    await conn.run_sync(create_tables, shared)
            self._shared_ready = True

    def _shared(self) -> dict[Table, Engine] | None:
        """Each shared table's engine (the central one) for a tenant session; cached."""
        if self._shared_engine is None:
            return None
        shared = self._tables.shared_tables()
        if shared is not self._shared_binds[0]:
            central = self._shared_engine.sync_engine
            self._shared_binds = (shared, dict.fromkeys(shared, central))
        return self._shared_binds[1]

    def _url(self, tenant: Tenant) -> str:
        override = self._tenant_urls.get(tenant.identifier)
        if override is not None:
            return override.get_secret_value()
        return self._servers.tenant_database_url(tenant, self._url_template)

    def _explicit(self, tenant: Tenant) -> bool:
        """Whether the tenant's database is the operator's (never created or dropped here)."""
        return tenant.database_url is not None or tenant.identifier in self._tenant_urls

    def _new_engine(self, url: str) -> AsyncEngine:
        return self._engine_factory(url)


def _engine_key(tenant: Tenant, url: str) -> str:
    # The URL is part of the key: once a tenant moves to another server (a new URL on its
    # record), every process builds an engine for the new server with the next record it loads,
    # instead of reusing the one cached for the old server under the same database name.
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{checked_storage_name(tenant.storage_name)}@{digest}"


def _drop_tables(connection: Connection, tables: list[Table]) -> None:
    metadatas = {id(table.metadata): table.metadata for table in tables}
    for metadata in metadatas.values():
        mine = [table for table in tables if table.metadata is metadata]
        metadata.drop_all(connection, tables=mine, checkfirst=True)


def _reachable(url: str) -> AbstractContextManager[None]:
    # The tenant's server being unreachable is a 503-kind failure, reported without the password.
    return unavailable_as_503(f"tenant database server at {redact_url(url)}")

"""⑤ Row isolation: tenants share tables; every ORM statement is confined to one ``tenant_id``.

Sessions are `TenantSession`s carrying their tenant's id in ``session.info``; the listeners that
confine their ORM statements and flushes live with the class in
`fastapi_tenancy.isolation.session`. The binding lives on the session, not on a connection, so it
holds across ``commit()`` and no pooled connection ever carries a tenant. Raw SQL (``text()``,
``session.connection()``) and Core statements on ``Table`` objects are not filtered; PostgreSQL
row-level security covers those (``row_level_security``, `fastapi_tenancy.isolation.rls`): the
session then sets its tenant transaction-locally at every BEGIN, for the policies to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fastapi_tenancy.isolation.rls import BIND_TENANT, verify_row_level_security
from fastapi_tenancy.isolation.session import (
    RLS_INFO_KEY,
    TENANT_INFO_KEY,
    TenantSession,
    session_tenant_id,
)
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.models import Tenant

__all__ = [
    "RLS_INFO_KEY",
    "TENANT_INFO_KEY",
    "RowIsolation",
    "TenantSession",
    "session_tenant_id",
]

_SHARED_TABLES_LOCK = "fastapi_tenancy.shared_tables"
_PG_LOCK = text(f"SELECT pg_advisory_xact_lock(hashtext('{_SHARED_TABLES_LOCK}'))")
_MYSQL_LOCK = text(f"SELECT GET_LOCK('{_SHARED_TABLES_LOCK}', 60)")
_MYSQL_UNLOCK = text(f"SELECT RELEASE_LOCK('{_SHARED_TABLES_LOCK}')")


class RowIsolation:
    """All tenants in the central database's shared tables, kept apart by ``tenant_id``.

    Example::

        isolation = RowIsolation(engine, TenantTables(Base.metadata))
        async with isolation.session(tenant) as session:
            items = (await session.scalars(select(Item))).all()   # this tenant's items only
    """

    def __init__(
        self, engine: AsyncEngine, tables: TenantTables, *, row_level_security: bool = False
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._rls = row_level_security
        self._sessions = async_sessionmaker(
            engine, sync_session_class=TenantSession, expire_on_commit=False
        )
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()

    @property
    def row_level_security(self) -> bool:
        """Whether sessions bind their tenant for PostgreSQL's row-level security policies."""
        return self._rls

    async def start(self) -> None:
        """With row-level security, refuse to start unless PostgreSQL would enforce it.

        Sessions use the central engine, which the runtime owns: nothing else to open.
        """
        if self._rls:
            async with self._engine.connect() as conn:
                tables = self._tables.scoped_tables_children_first()
                await conn.run_sync(verify_row_level_security, tables)

    async def close(self) -> None:
        """Nothing to release: the central engine is disposed by its owner."""

    def assign_storage(self, tenant: Tenant) -> Tenant:
        """Row isolation keeps every tenant in the shared tables: nothing to assign."""
        return tenant

    @asynccontextmanager
    async def session(self, tenant: Tenant) -> AsyncIterator[AsyncSession]:
        info: dict[str, Any] = {TENANT_INFO_KEY: tenant.id}
        if self._rls:
            info[RLS_INFO_KEY] = True
        async with self._sessions(info=info) as session:
            yield session

    async def provision(self, tenant: Tenant) -> None:
        # Shared tables are created once per process; each tenant needs no storage of its own.
        # Concurrent first tenants would race on CREATE TABLE (PostgreSQL answers the loser with
        # a unique violation in pg_type, MariaDB with "table exists"), so one creator runs at a
        # time: in this process by the lock, across processes by a server lock (SQLite, the
        # embedded default, serves one process).
        if self._tables_ready:
            return
        async with self._tables_lock:
            if self._tables_ready:
                return
            async with self._engine.begin() as conn:
                dialect = conn.dialect.name
                if dialect == "postgresql":
                    await conn.execute(_PG_LOCK)  # released with the transaction
                elif dialect in ("mysql", "mariadb"):
                    await conn.execute(_MYSQL_LOCK)
                try:
                    for metadata in self._tables.metadatas():
                        await conn.run_sync(metadata.create_all, checkfirst=True)
                finally:
                    if dialect in ("mysql", "mariadb"):
                        await conn.execute(_MYSQL_UNLOCK)
            self._tables_ready = True

    async def purge(self, tenant: Tenant) -> None:
        async with self._engine.begin() as conn:
            if self._rls:
                # The policies hide every row from a transaction that names no tenant.
                await conn.execute(BIND_TENANT, {"tenant_id": tenant.id})
            # Every tenant_id table in the database, Alembic-owned ones included.
            for table in await conn.run_sync(self._tables.existing_scoped_tables):
                await conn.execute(delete(table).where(table.c.tenant_id == tenant.id))

"""⑤ Schema isolation: each tenant's tables live in a schema of their own.

PostgreSQL gets one schema per tenant in the central database. On MariaDB/MySQL a schema *is* a
database, so each tenant gets a database on the central server, reached through the same pool.
SQLite has no schemas; the configuration refuses the combination.

The binding is per transaction and leaves nothing on the connection (``schema_binding``):

* ``search_path`` (PostgreSQL's default): ``set_config('search_path', '"schema", pg_temp', true)``
  at every BEGIN, transaction-local; the path holds only the tenant's schema (and, last, the
  session's temporary tables), so neither ORM statements nor raw SQL can reach ``public``. On
  asyncpg it travels in the same message as the BEGIN (`fastapi_tenancy.pgwire`), so it costs
  no round trip, and every tenant shares the same SQL text for its statements, so prepared
  statements and plans are reused across tenants. AUTOCOMMIT would end the binding with its first
  statement: tenant sessions refuse it (`fastapi_tenancy.isolation.session`).
* ``translate_map`` (MariaDB/MySQL, where schema and database are one): ``schema_translate_map``
  qualifies every table without an explicit schema with the tenant's schema at execution time.
  No extra statement, but each tenant has its own SQL text (see ``benchmarks/isolation.py`` and
  docs/isolation.md for the measurements that chose the defaults).

Shared tables (`fastapi_tenancy.isolation.tables`: models without `TenantScoped`) live once, in
``shared_schema`` on PostgreSQL (``public`` by default) and in the central database on
MariaDB/MySQL; they are created once per process, never in a tenant's schema, and reached from
tenant sessions: the search path names the shared schema after the tenant's, and the translate
map leaves shared tables unqualified. Foreign keys from tenant tables to shared ones are created
on PostgreSQL; MariaDB/MySQL would look for the shared table in the tenant's database, so there
they are left out.

Sessions are `TenantSession`s (their listeners, the binding's included, live in
`fastapi_tenancy.isolation.session`), so the row filter on ``tenant_id`` stays on as a second
wall.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from cachetools import LRUCache
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.schema import CreateSchema, DropSchema

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.alembic_template import AlembicSchemas
from fastapi_tenancy.isolation.naming import assign_storage_name, checked_storage_name
from fastapi_tenancy.isolation.ownership import check_owner, owner_mark
from fastapi_tenancy.isolation.session import SEARCH_PATH_INFO_KEY, TENANT_INFO_KEY, TenantSession
from fastapi_tenancy.isolation.tables import (
    TenantTables,
    create_tables,
    omit_shared_references,
    shared_tables_lock,
)
from fastapi_tenancy.isolation.templates import SchemaTemplate, run_script
from fastapi_tenancy.models import Tenant

__all__ = ["SchemaIsolation"]

Binding = Literal["translate_map", "search_path"]

logger = logging.getLogger("fastapi_tenancy.lifecycle")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class SchemaIsolation:
    """One schema (PostgreSQL) or database (MariaDB/MySQL) per tenant, on the central server.

    Example::

        isolation = SchemaIsolation(engine, TenantTables(Base.metadata), prefix="tenant_")
        tenant = isolation.assign_storage(tenant)     # storage_name chosen once
        await isolation.provision(tenant)             # CREATE SCHEMA + tables inside it
        async with isolation.session(tenant) as session:
            ...
    """

    def __init__(
        self,
        engine: AsyncEngine,
        tables: TenantTables,
        *,
        prefix: str,
        binding: Binding,
        shared_schema: str = "public",
        alembic: AlembicSchemas | None = None,
    ) -> None:
        if _SCHEMA_NAME.fullmatch(shared_schema) is None:
            raise ConfigurationError(f"shared_schema {shared_schema!r} is not a valid schema name")
        self._shared_schema = shared_schema
        self._shared_ready = False
        # Whether tenant sessions' search path names the shared schema: unknown until this
        # process has looked for tenant table names there (`_decide_shared_path`).
        self._shared_on_path: bool | None = None
        self._shared_lock = asyncio.Lock()
        self._engine = engine
        self._tables = tables
        self._prefix = prefix
        self._postgres = engine.dialect.name == "postgresql"
        if binding == "search_path" and not self._postgres:
            raise ConfigurationError("the search_path binding exists on PostgreSQL only")
        self._binding: Binding = binding
        # Engines carrying a translate map share the pool; keep recent ones instead of rebuilding.
        self._binds: LRUCache[str, AsyncEngine] = LRUCache(maxsize=4096)
        self._template = SchemaTemplate(engine.dialect)
        # `alembic_config`: tenants are made at the Alembic head, from a template.
        self._alembic = alembic

    async def start(self) -> None:
        """Nothing to open: tenant schemas are reached through the central engine."""

    async def close(self) -> None:
        """Nothing to release: the central engine is disposed by its owner."""
        self._binds.clear()

    def assign_storage(self, tenant: Tenant) -> Tenant:
        return assign_storage_name(tenant, self._prefix)

    @asynccontextmanager
    async def session(self, tenant: Tenant) -> AsyncIterator[AsyncSession]:
        schema = checked_storage_name(tenant.storage_name)
        info: dict[str, Any] = {TENANT_INFO_KEY: tenant.id}
        if self._binding == "search_path":
            bind = self._engine
            if self._shared_on_path is None and self._tables.shared_tables():
                await self._decide_shared_path()
            info[SEARCH_PATH_INFO_KEY] = self._search_path(schema)
        else:
            self._tables.split()  # shared tables are left unqualified from here on
            bind = self._translated(schema)
        async with AsyncSession(
            bind=bind, sync_session_class=TenantSession, expire_on_commit=False, info=info
        ) as session:
            yield session

    async def provision(self, tenant: Tenant) -> None:
        """Create the tenant's schema, marked as its own, and its tables; safe to repeat.

        A schema that an interrupted attempt made for this tenant is reused (its missing tables
        are created); one that belongs to anyone else raises `StorageConflict`, untouched.
        """
        schema = checked_storage_name(tenant.storage_name)
        mark = owner_mark(tenant)
        await self.create_shared_tables()
        if self._alembic is not None:
            await self._alembic.provision(self._engine, tenant, schema, mark)
            return
        if self._postgres and await self._provision_from_template(schema, mark):
            return
        if self._postgres:
            # DDL is transactional on PostgreSQL: schema, mark and tables appear together or not.
            async with self._engine.begin() as conn:
                await self._search_shared(conn)
                found = await _schema_mark(conn, schema)
                if found is None:
                    await conn.execute(CreateSchema(schema))
                    await conn.execute(text(f"COMMENT ON SCHEMA \"{schema}\" IS '{mark}'"))
                else:
                    check_owner(f"schema {schema}", tenant, found, await _tables(conn, schema))
                await self._create_tables(conn, schema, fresh=found is None)
            return
        async with self._engine.begin() as conn:
            found = await _schema_mark(conn, schema)
            if found is not None:
                check_owner(f"database {schema}", tenant, found, await _tables(conn, schema))
            else:
                comment = f" COMMENT '{mark}'" if _mariadb(conn) else ""
                await conn.execute(
                    text(f"CREATE DATABASE `{schema}` CHARACTER SET utf8mb4{comment}")
                )
        try:
            async with self._engine.begin() as conn:
                await self._create_tables(conn, schema, fresh=found is None)
        except BaseException:
            if found is None:
                async with self._engine.begin() as conn:
                    await conn.execute(DropSchema(schema))  # created just above by this call
            raise

    async def _provision_from_template(self, schema: str, mark: str) -> bool:
        """Create a new schema and its tables in one round trip; ``False`` when it cannot.

        The pre-rendered script (`SchemaTemplate`) goes to asyncpg as one simple-protocol
        query: PostgreSQL runs it as one implicit transaction, so a failure leaves nothing.
        Any failure (the schema exists, left by an interrupted attempt or someone else's; the
        server went away) hands over to the step-by-step path, which reuses or refuses what it
        finds and reports errors the usual way.
        """
        script = self._script(schema, mark)
        if script is None:
            return False
        try:
            async with self._engine.connect() as conn:
                await run_script(conn, script)
        except Exception:
            return False
        return True

    async def storage_script(self, tenant: Tenant, engine: AsyncEngine) -> str | None:
        """The DDL making a new ``tenant``'s schema and tables, to run in a transaction on
        ``engine`` together with the tenant's record; ``None`` when there is none.

        There is one only when ``engine`` is this strategy's own (the record and the schema are
        in one database), on PostgreSQL through asyncpg, with the tenant tables templated: from
        the metadata, or with ``alembic_config`` a copy of the Alembic template when it can be
        copied faithfully. The script fails, changing nothing, if the schema exists: the caller
        then provisions step by step (`provision`), which reuses or refuses what it finds.
        """
        if engine is not self._engine:
            return None
        schema = checked_storage_name(tenant.storage_name)
        await self.create_shared_tables()
        if self._alembic is not None:
            # A copy of the Alembic template, when it can be copied faithfully in one script.
            return await self._alembic.script(self._engine, schema, owner_mark(tenant))
        return self._script(schema, owner_mark(tenant))

    def _script(self, schema: str, mark: str) -> str | None:
        """``schema``, commented ``mark``, and its tables as one script (PostgreSQL, asyncpg)."""
        if not self._postgres or self._engine.dialect.driver != "asyncpg":
            return None
        script = self._template.script(self._tables.metadatas(), schema, mark)
        if script is None:
            return None
        if self._tables.shared_tables():
            # Foreign keys to shared tables name them unqualified: found on this search path,
            # local to the script's implicit transaction.
            script = f"{self._set_shared_path()};\n{script}"
        return script

    async def purge(self, tenant: Tenant) -> None:
        """Drop the tenant's schema with everything in it; refuses one marked as another's."""
        schema = checked_storage_name(tenant.storage_name)
        self._binds.pop(schema, None)
        async with self._engine.begin() as conn:
            found = await _schema_mark(conn, schema)
            if found is None:
                return
            if found and found != owner_mark(tenant):
                check_owner(f"schema {schema}", tenant, found, 0)
            await conn.execute(DropSchema(schema, cascade=self._postgres, if_exists=True))

    async def create_shared_tables(self) -> None:
        """Create the missing shared tables, once per process, in the shared schema.

        Concurrent creators (processes, or tenants provisioned at once) wait for one server lock,
        as row isolation's do. A tenant table that also exists in the shared schema (left by a
        single-tenant past) is reported: a tenant schema missing it would find the shared one.
        """
        if self._shared_ready:
            return
        async with self._shared_lock:
            if self._shared_ready:
                return
            tenant, shared = self._tables.split()
            if shared:
                async with self._engine.begin() as conn, shared_tables_lock(conn):
                    if self._postgres:
                        await conn.execute(
                            text(f'CREATE SCHEMA IF NOT EXISTS "{self._shared_schema}"')
                        )
                        await self._search_shared(conn)
                    await conn.run_sync(create_tables, shared)
                    if self._postgres:
                        self._shared_on_path = not await self._shadowed(conn, tenant)
            self._shared_ready = True

    async def _decide_shared_path(self) -> None:
        """Look once per process for tenant table names in the shared schema (one query)."""
        async with self._shared_lock:
            if self._shared_on_path is None:
                async with self._engine.connect() as conn:
                    self._shared_on_path = not await self._shadowed(
                        conn, self._tables.tenant_tables()
                    )

    async def _shadowed(self, conn: AsyncConnection, tenant: list[Table]) -> bool:
        """Whether a tenant table's name exists in the shared schema.

        Such a table (a single-tenant past, a stray copy) would answer for a tenant whose own
        table or schema is missing if the shared schema were on the search path: the
        fall-through to ``public`` this library never allows. The shared schema then stays off
        the path, and tenant sessions cannot reach shared tables until the stray tables are
        dropped or moved and the process restarts.
        """
        names = [table.name for table in tenant]
        if not names or self._binding != "search_path":
            return False
        statement = text(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = :schema AND table_name = ANY(:names)"
        )
        rows = await conn.execute(statement, {"schema": self._shared_schema, "names": names})
        found = sorted(str(row[0]) for row in rows)
        if found:
            logger.error(
                "tenant tables %s also exist in the shared schema %s: it is left off tenant "
                "sessions' search path (a tenant schema missing them would read those), so "
                "shared tables are unreachable from tenant sessions until they are dropped or "
                "moved (see docs/isolation.md#shared-tables)",
                ", ".join(found),
                self._shared_schema,
            )
        return bool(found)

    def _search_path(self, schema: str) -> str:
        # pg_temp named last: otherwise PostgreSQL searches it first, and a temporary table
        # would shadow the tenant's table of the same name. The shared schema comes after the
        # tenant's, only when there are shared tables to find there and no tenant table's name
        # is found in it (`_shadowed`).
        if self._shared_on_path and self._tables.shared_tables():
            return f'"{schema}", "{self._shared_schema}", pg_temp'
        return f'"{schema}", pg_temp'

    def _set_shared_path(self) -> str:
        return f"SELECT set_config('search_path', '\"{self._shared_schema}\"', true)"

    async def _search_shared(self, conn: AsyncConnection) -> None:
        """Let this transaction's DDL find the shared tables unqualified (PostgreSQL)."""
        if self._postgres and self._tables.shared_tables():
            await conn.execute(text(self._set_shared_path()))

    async def _create_tables(
        self, conn: AsyncConnection, schema: str, *, fresh: bool = False
    ) -> None:
        """Create the tenant tables in ``schema``; ``fresh``: just created, so none exists
        there yet and none is looked for (a query per table saved)."""
        tables = self._tables.tenant_tables()
        if not tables:
            return
        translated = await conn.execution_options(schema_translate_map={None: schema})
        if self._postgres:
            await translated.run_sync(create_tables, tables, checkfirst=not fresh)
            return
        # MariaDB/MySQL resolve an unqualified REFERENCES in the created table's own database,
        # where shared tables never are: foreign keys to them are left out there.
        with omit_shared_references():
            await translated.run_sync(create_tables, tables, checkfirst=not fresh)

    def _translated(self, schema: str) -> AsyncEngine:
        bind = self._binds.get(schema)
        if bind is None:
            bind = self._engine.execution_options(schema_translate_map={None: schema})
            self._binds[schema] = bind
        return bind


async def _schema_mark(conn: AsyncConnection, schema: str) -> str | None:
    """``None`` if ``schema`` does not exist, else its owner mark (``""`` when unmarked)."""
    if conn.dialect.name == "postgresql":
        statement = text(
            "SELECT coalesce(obj_description(oid, 'pg_namespace'), '') "
            "FROM pg_namespace WHERE nspname = :name"
        )
    elif _mariadb(conn):
        statement = text(
            "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"
        )
    else:
        statement = text("SELECT '' FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name")
    row = (await conn.execute(statement, {"name": schema})).first()
    return None if row is None else str(row[0] or "")


async def _tables(conn: AsyncConnection, schema: str) -> int:
    statement = text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :name")
    return int((await conn.execute(statement, {"name": schema})).scalar_one())


def _mariadb(conn: AsyncConnection) -> bool:
    # MariaDB keeps a comment on a database (10.5+); MySQL has nowhere to keep one.
    return bool(getattr(conn.dialect, "is_mariadb", False))

"""Provisioning from a template: a tenant's DDL rendered once, or a database copied whole.

``metadata.create_all`` asks the server about every table before creating it and sends each
``CREATE TABLE`` and ``CREATE INDEX`` on its own: a dozen round trips or more per tenant. The
DDL is the same for every tenant but for the schema name, so `SchemaTemplate` renders it once,
for a placeholder schema, exactly as ``create_all`` would (through a mock engine: types, enum
types, sequences, constraints, indexes and comments included), and substitutes the tenant's
validated, quoted schema name into the cached text.

On PostgreSQL the script is sent as one simple-protocol query, which the server runs as one
implicit transaction: the schema, its owner mark and its tables appear together or not at all.

Under database isolation on PostgreSQL, `DatabaseTemplate` keeps a template database holding
the tenant tables and creates each tenant's database with ``CREATE DATABASE ... TEMPLATE``: no
connection to the new database and no ``create_all`` in it. The template is named after a digest
of its DDL (``<prefix>tpl_<digest>_tpl``, a shape no tenant's storage name has), so tables added
to the metadata make a new one; it refuses connections (``ALLOW_CONNECTIONS false``), so it is
never served and never "being accessed by other users" when a tenant is copied from it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import MetaData, Table, create_mock_engine, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.ddl import ExecutableDDLElement

from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.isolation.tables import tenant_tables
from fastapi_tenancy.models import Tenant

__all__ = [
    "DatabaseTemplate",
    "SchemaTemplate",
    "build_template_database",
    "is_template_database",
    "render_tables",
    "run_script",
]

logger = logging.getLogger("fastapi_tenancy.lifecycle")

# Rendered quoted (upper-case letters force quoting), and no storage name can contain it:
# storage names are lower case.
_PLACEHOLDER = "TenancyTemplateSchema"
_QUOTED = f'"{_PLACEHOLDER}"'
_TemplateKey = tuple[tuple[int, tuple[str, ...]], ...]


# `DatabaseTemplate`'s (``tpl_``, named after the DDL) and the Alembic ones (``alembic_``, named
# after the head revisions; `fastapi_tenancy.isolation.alembic_template`).
_TEMPLATE_NAME = re.compile(r"(tpl|alembic)_[0-9a-f]{16}_tpl")


def is_template_database(name: str, prefix: str) -> bool:
    """Whether ``name`` is a template database `DatabaseTemplate` keeps under ``prefix``."""
    return name.startswith(prefix) and _TEMPLATE_NAME.fullmatch(name[len(prefix) :]) is not None


class SchemaTemplate:
    """The DDL creating one tenant's schema and tables on PostgreSQL, rendered once."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._key: _TemplateKey | None = None
        self._statements: list[str] | None = None

    def script(self, metadatas: list[MetaData], schema: str, mark: str) -> str | None:
        """One script creating ``schema`` (commented ``mark``) and the metadatas' tables in it.

        ``None`` when a table names a schema of its own: such a table is shared, may already
        exist, and is left to ``create_all``'s per-table checks.
        """
        statements = self._rendered(metadatas)
        if statements is None:
            return None
        quoted = f'"{checked_storage_name(schema)}"'
        head = [f"CREATE SCHEMA {quoted}", f"COMMENT ON SCHEMA {quoted} IS '{mark}'"]
        return ";\n".join(head + [s.replace(_QUOTED, quoted) for s in statements])

    def _rendered(self, metadatas: list[MetaData]) -> list[str] | None:
        # Models imported after start-up add tables to a metadata: the key notices them.
        key = tuple((id(metadata), tuple(metadata.tables)) for metadata in metadatas)
        if key != self._key:
            self._statements = _render(metadatas, self._dialect, _PLACEHOLDER)
            self._key = key
        return self._statements


class DatabaseTemplate:
    """A PostgreSQL template database with the tenant tables; tenant databases are its copies."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._ready: set[str] = set()
        # Templates this process could not build (no CREATEDB right, ...): not tried again.
        self._unbuildable: set[str] = set()
        self._key: _TemplateKey | None = None
        self._statements: list[str] | None = None

    async def create(self, url: str, name: str, metadatas: list[MetaData], mark: str) -> bool:
        """Create database ``name`` (at ``url``'s server) with its tables, commented ``mark``.

        ``False``, with nothing created, when there is no template to copy (another server
        kind, tables naming a schema of their own, the template could not be built or copied):
        the caller then creates the database and its tables itself.
        """
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            return False
        admin = create_async_engine(
            parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )
        try:
            async with admin.connect() as conn:
                planned = self._template(url, metadatas, conn.dialect)
                if planned is None:
                    return False
                template, fill = planned
                # Each server of a pool (`database_servers`) has a template of its own.
                where = f"{parsed.host}:{parsed.port}/{template}"
                if where in self._unbuildable:
                    return False
                if where not in self._ready:
                    try:
                        if await build_template_database(conn, url, template, fill):
                            await self._built(conn, template)
                    except Exception:
                        logger.warning("building template %s failed", template, exc_info=True)
                        self._unbuildable.add(where)
                        return False
                    self._ready.add(where)
                try:
                    await conn.execute(
                        text(
                            f'CREATE DATABASE "{checked_storage_name(name)}" TEMPLATE "{template}"'
                        )
                    )
                except Exception:
                    logger.warning(
                        "creating %s from template %s failed", name, template, exc_info=True
                    )
                    self._ready.discard(where)
                    return False
                try:
                    await conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{mark}'"))
                except Exception:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    raise
        finally:
            await admin.dispose()
        return True

    def _template(
        self, url: str, metadatas: list[MetaData], dialect: Dialect
    ) -> tuple[str, Callable[[str], Awaitable[None]]] | None:
        """The template to copy, and how to fill it; ``None`` when there is none to copy."""
        statements = self._rendered(metadatas, dialect)
        if statements is None:
            return None
        digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()[:16]
        template = checked_storage_name(f"{self._prefix}tpl_{digest}_tpl")
        return template, _run_statements(statements)

    async def _built(self, conn: AsyncConnection, template: str) -> None:
        """Called once this process has built ``template`` (on ``conn``, AUTOCOMMIT)."""

    def _rendered(self, metadatas: list[MetaData], dialect: Dialect) -> list[str] | None:
        key = tuple((id(metadata), tuple(metadata.tables)) for metadata in metadatas)
        if key != self._key:
            self._statements = _render(metadatas, dialect, None)
            self._key = key
        return self._statements

    async def complete(self, url: str, tenant: Tenant) -> None:
        """Finish a tenant database that was not copied from a template (nothing to do here).

        `fastapi_tenancy.isolation.alembic_template.AlembicDatabaseTemplate` runs the app's
        revisions in it.
        """


def _run_statements(statements: list[str]) -> Callable[[str], Awaitable[None]]:
    async def fill(url: str) -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as tables:
                for statement in statements:
                    await tables.exec_driver_sql(statement)
        finally:
            await engine.dispose()

    return fill


async def build_template_database(
    conn: AsyncConnection, url: str, template: str, fill: Callable[[str], Awaitable[None]]
) -> bool:
    """Make sure ``template`` exists: built under a name of its own, then renamed into place.

    ``conn`` is an AUTOCOMMIT connection to the server; ``fill`` gets the URL of the database
    being built and puts its contents there. Two processes building at once each build their
    own copy; the rename makes one of them the template, and the other drops its copy. Whether
    this call built it (``False``: it was there).
    """
    exists = text("SELECT 1 FROM pg_database WHERE datname = :name")
    if await conn.scalar(exists, {"name": template}):
        return False
    building = checked_storage_name(f"{template}_{secrets.token_hex(3)}")
    await conn.execute(text(f'CREATE DATABASE "{building}"'))
    try:
        await fill(make_url(url).set(database=building).render_as_string(hide_password=False))
        await conn.execute(
            text(f"COMMENT ON DATABASE \"{building}\" IS 'fastapi-tenancy template'")
        )
        await conn.execute(text(f'ALTER DATABASE "{building}" WITH ALLOW_CONNECTIONS false'))
        await conn.execute(text(f'ALTER DATABASE "{building}" RENAME TO "{template}"'))
    except Exception:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)'))
        if not await conn.scalar(exists, {"name": template}):
            raise
        return False
    return True


def _render(
    metadatas: list[MetaData], dialect: Dialect, placeholder: str | None
) -> list[str] | None:
    """What ``create_all`` sends for ``metadatas``' tenant tables, in ``placeholder``.

    Shared tables (`fastapi_tenancy.isolation.tables`) are not part of a tenant's DDL.
    """
    tables = {id(m): tenant_tables(m) for m in metadatas}
    if any(table.schema is not None for found in tables.values() for table in found):
        return None
    statements: list[str] = []
    for metadata in metadatas:
        translate: dict[str | None, str | None] | None = (
            {None: placeholder} if placeholder is not None else None
        )
        statements += render_tables(metadata, tables[id(metadata)], dialect, translate)
    script = "\n".join(statements)
    if placeholder is not None and script.count(_PLACEHOLDER) != script.count(_QUOTED):
        return None  # the placeholder appears somewhere other than as the schema: do not guess
    return statements


def render_tables(
    metadata: MetaData,
    tables: list[Table],
    dialect: Dialect,
    translate: dict[str | None, str | None] | None,
) -> list[str]:
    """The statements ``create_all`` sends for ``tables`` of ``metadata`` (types, sequences,
    indexes and comments included), with the schemas renamed by ``translate``."""
    statements: list[str] = []
    options: dict[str, Any] = (
        {"schema_translate_map": translate, "render_schema_translate": True}
        if translate is not None
        else {}
    )

    def record(element: ExecutableDDLElement, *_args: Any, **_kwargs: Any) -> None:
        statements.append(str(element.compile(dialect=dialect, **options)).strip())

    engine = create_mock_engine(f"{dialect.name}+{dialect.driver}://", record)
    metadata.create_all(engine, checkfirst=False, tables=tables)
    return statements


async def run_script(conn: AsyncConnection, script: str) -> None:
    """Send ``script`` (several statements) to asyncpg as one simple-protocol query.

    SQLAlchemy's asyncpg cursor prepares every statement, and a prepared statement holds one
    command, so the script goes to the driver connection directly. The engine's statement
    listeners (slow-query log, statement counts, an app's own auditing) still hear of it as one
    statement: bypassing the cursor must not make provisioning DDL invisible.
    """
    sync = conn.sync_connection
    assert sync is not None  # an open AsyncConnection always has its sync connection
    dispatch = sync.dispatch
    # Listeners key their bookkeeping by cursor; this object stands in for the one not used.
    cursor = object()
    dispatch.before_cursor_execute(sync, cursor, script, (), None, False)
    raw = await conn.get_raw_connection()
    # No SQLAlchemy transaction is open on the connection: the script is its own.
    await raw.driver_connection.execute(script)  # type: ignore[union-attr]
    dispatch.after_cursor_execute(sync, cursor, script, (), None, False)

"""Which tables hold tenant data, and which are shared by every tenant.

The tables come from the configured metadata, or from every `TenantScoped` model's. The rule that
splits them (`tenant_tables` / `shared_tables`) is the one every consumer uses: provisioning and
templates create only tenant tables per tenant, shared ones live once (the central database, in
``shared_schema`` under schema isolation), and migrations run the shared ones once.

A table is a **tenant table** when, without a schema of its own,

* it has a ``tenant_id`` column (every `TenantScoped` model), or
* it references a tenant table by foreign key, directly or through other tables (a
  joined-inheritance subclass, an association table): a shared table cannot point at rows that
  exist once per tenant;

``Table(..., info={"tenancy": "tenant"})`` or ``{"tenancy": "shared"}`` decides explicitly. Every
other table is **shared**: a table naming its own schema, and plain models such as ``plans``. The
library's own ``tenancy_*`` tables are neither: they belong to the central store.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

from sqlalchemy import MetaData, Table, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.util import sort_tables

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.scoped import tenant_scoped_classes

__all__ = [
    "LIBRARY_TABLE_PREFIX",
    "TABLE_KIND_KEY",
    "TenantTables",
    "create_tables",
    "load_metadata",
    "omit_shared_references",
    "shared_tables",
    "shared_tables_lock",
    "tenant_tables",
]

# The library's own tables (tenant records, the audit trail) outlive the tenants they name.
LIBRARY_TABLE_PREFIX = "tenancy_"
TENANT_COLUMN = "tenant_id"
# ``Table.info`` key that overrides the rule: "tenant" or "shared".
TABLE_KIND_KEY = "tenancy"


# Set while a tenant's own database is created: foreign keys from its tables to shared tables
# cannot exist there (the shared tables live in the central database), so their DDL is left out.
_omitting_shared_references: ContextVar[bool] = ContextVar(
    "fastapi_tenancy.omit_shared_references", default=False
)


@contextmanager
def omit_shared_references() -> Iterator[None]:
    """Leave foreign keys from tenant tables to shared tables out of the DDL emitted inside."""
    token = _omitting_shared_references.set(True)
    try:
        yield
    finally:
        _omitting_shared_references.reset(token)


def _create_shared_reference(*_args: object, **_kwargs: object) -> bool:
    return not _omitting_shared_references.get()


def _keep_in_place(tenant: list[Table], shared: list[Table]) -> None:
    """Make the split hold in SQL: shared tables stay where they are from every tenant session.

    A tenant session under ``translate_map`` qualifies every table without a schema with the
    tenant's schema; a shared table is excluded from that translation (SQLAlchemy's per-object
    switch ``_use_schema_map``, which it turns off for names it must not translate; no public
    API selects tables one by one, and tests/isolation/test_shared_tables.py fails if the switch
    goes away), so it renders
    unqualified and is found in the central database (MariaDB) or on the search path
    (PostgreSQL). Foreign keys from tenant tables to shared ones get a DDL condition so that a
    tenant database, which cannot hold them, is created without them (`omit_shared_references`).
    """
    shared_set = set(shared)
    for table in shared:
        if table.schema is None:
            table._use_schema_map = False
    for table in tenant:
        for fk in table.foreign_key_constraints:
            if fk.referred_table in shared_set and fk._ddl_if is None:
                fk.ddl_if(callable_=_create_shared_reference)


def _split(metadatas: Iterable[MetaData]) -> tuple[list[Table], list[Table]]:
    """(tenant tables, shared tables), each parents first (the order ``create_all`` uses)."""
    tables = [
        table
        for metadata in metadatas
        for table in metadata.tables.values()
        if not table.name.startswith(LIBRARY_TABLE_PREFIX)
    ]
    tenant: set[Table] = set()
    for table in tables:
        kind = table.info.get(TABLE_KIND_KEY)
        if kind not in (None, "tenant", "shared"):
            raise ConfigurationError(
                f"table {table.fullname}: info[{TABLE_KIND_KEY!r}] is {kind!r}; use 'tenant' or "
                "'shared'"
            )
        if kind == "tenant" or (kind is None and table.schema is None and TENANT_COLUMN in table.c):
            tenant.add(table)
    # A table referencing a tenant table holds per-tenant rows too, however far the chain goes.
    changed = True
    while changed:
        changed = False
        for table in tables:
            if table in tenant or table.schema is not None or table.info.get(TABLE_KIND_KEY):
                continue
            if any(fk.column.table in tenant for fk in table.foreign_keys):
                tenant.add(table)
                changed = True
    ordered = sort_tables(tables)
    return (
        [table for table in ordered if table in tenant],
        [table for table in ordered if table not in tenant],
    )


def create_tables(connection: Connection, tables: list[Table], *, checkfirst: bool = True) -> None:
    """``create_all`` of ``tables`` (missing ones only), metadata by metadata, parents first.

    ``checkfirst=False`` skips the look for each table (a query each): for a schema or database
    this call's caller has just created, where none can exist.
    """
    metadatas: list[MetaData] = []
    for table in tables:
        if all(table.metadata is not seen for seen in metadatas):
            metadatas.append(table.metadata)
    for metadata in metadatas:
        mine = [table for table in tables if table.metadata is metadata]
        metadata.create_all(connection, tables=mine, checkfirst=checkfirst)


# The same lock row isolation takes while it creates its shared tables.
_LOCK_NAME = "fastapi_tenancy.shared_tables"


@asynccontextmanager
async def shared_tables_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """One creator of shared tables at a time across processes (PostgreSQL, MariaDB/MySQL).

    Concurrent ``CREATE TABLE`` of one table races (PostgreSQL answers the loser with a unique
    violation in pg_type, MariaDB with "table exists"). On PostgreSQL the lock ends with the
    transaction ``conn`` is in; SQLite serves one process.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock(hashtext('{_LOCK_NAME}'))"))
    elif dialect in ("mysql", "mariadb"):
        await conn.execute(text(f"SELECT GET_LOCK('{_LOCK_NAME}', 60)"))
    try:
        yield
    finally:
        if dialect in ("mysql", "mariadb"):
            await conn.execute(text(f"SELECT RELEASE_LOCK('{_LOCK_NAME}')"))


def tenant_tables(metadata: MetaData | Iterable[MetaData]) -> list[Table]:
    """The tables every tenant gets a copy of under schema and database isolation, parents first.

    Also the tables a tenant revision of Alembic migrates per tenant; see the module docstring
    for the rule.
    """
    return _split([metadata] if isinstance(metadata, MetaData) else metadata)[0]


def shared_tables(metadata: MetaData | Iterable[MetaData]) -> list[Table]:
    """The tables that exist once for all tenants (created and migrated once), parents first."""
    return _split([metadata] if isinstance(metadata, MetaData) else metadata)[1]


def load_metadata(spec: str | MetaData) -> MetaData:
    """Resolve ``"package.module:Base.metadata"`` (or a MetaData) to the MetaData it names."""
    if isinstance(spec, MetaData):
        return spec
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"tenant_metadata {spec!r} must look like 'package.module:Base.metadata'"
        )
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"tenant_metadata {spec!r} cannot be imported: {exc}") from exc
    if not isinstance(target, MetaData):
        raise ConfigurationError(
            f"tenant_metadata {spec!r} is a {type(target).__name__}, not MetaData"
        )
    return target


class TenantTables:
    """The tables isolation provisions and purges.

    With an explicit metadata (``TENANCY_TENANT_METADATA``) that is the whole set; without one it
    is the metadata of every mapped `TenantScoped` model, looked up when first needed so models
    imported after start-up still count.
    """

    def __init__(self, metadata: str | MetaData | None = None) -> None:
        self._spec = metadata
        self._metadata: MetaData | None = None
        self._split_key: tuple[tuple[int, int], ...] | None = None
        self._split_value: tuple[list[Table], list[Table]] = ([], [])

    def metadatas(self) -> list[MetaData]:
        if self._spec is not None:
            if self._metadata is None:
                self._metadata = load_metadata(self._spec)
            return [self._metadata]
        found: list[MetaData] = []
        for cls in tenant_scoped_classes():
            metadata = cls.__table__.metadata
            if all(metadata is not seen for seen in found):
                found.append(metadata)
        return found

    def split(self) -> tuple[list[Table], list[Table]]:
        """(`tenant_tables`, `shared_tables`) of `metadatas`, cached until a table is added."""
        metadatas = self.metadatas()
        # Tables are added (models imported late), never renamed: the count notices.
        key = tuple((id(metadata), len(metadata.tables)) for metadata in metadatas)
        if key != self._split_key:
            self._split_value = _split(metadatas)
            _keep_in_place(*self._split_value)
            self._split_key = key
        return self._split_value

    def tenant_tables(self) -> list[Table]:
        """The tables each tenant gets under schema and database isolation, parents first."""
        return self.split()[0]

    def shared_tables(self) -> list[Table]:
        """The tables that exist once, for every tenant, parents first."""
        return self.split()[1]

    def scoped_tables_children_first(self) -> list[Table]:
        """Tables with a ``tenant_id`` column, ordered so foreign keys never block a DELETE."""
        tables = [table for metadata in self.metadatas() for table in metadata.tables.values()]
        ordered = sort_tables(tables)
        return [table for table in reversed(ordered) if "tenant_id" in table.c]

    def existing_scoped_tables(self, connection: Connection) -> list[Table]:
        """Every table in the database with a ``tenant_id`` column, children first.

        Found by reflecting the database, not only the metadata: tables that Alembic owns (and
        no metadata names), or that were added after start-up, hold tenant rows too. The
        library's own ``tenancy_*`` tables are left out. Schemas searched: the connection's
        default one and any a configured table names.
        """
        inspector = inspect(connection)
        schemas: set[str | None] = {None}
        schemas.update(t.schema for m in self.metadatas() for t in m.tables.values() if t.schema)
        reflected = MetaData()
        for schema in schemas:
            columns = inspector.get_multi_columns(schema=schema)
            names = [
                name
                for (_, name), found in columns.items()
                if any(column["name"] == TENANT_COLUMN for column in found)
                and not name.startswith(LIBRARY_TABLE_PREFIX)
            ]
            if names:
                reflected.reflect(connection, schema=schema, only=names)
        ordered = sort_tables(reflected.tables.values())
        return [
            table
            for table in reversed(ordered)
            if TENANT_COLUMN in table.c and not table.name.startswith(LIBRARY_TABLE_PREFIX)
        ]

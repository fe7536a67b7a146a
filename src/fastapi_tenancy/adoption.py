"""Adopting existing data: rows without a tenant (``tenant_id IS NULL``) given to one tenant.

The middle step of taking a single-tenant database into row isolation (docs/adopting.md): after a
migration added a nullable ``tenant_id`` (`fastapi_tenancy.migrations.ops.add_tenant_column`) and
before one makes it NOT NULL (``enforce_tenant_column``), `adopt_rows` stamps every row that has no
tenant with the first tenant's id.

It works in batches, each its own short transaction, so a large table is never locked as a whole
and an interrupted run is resumed by running it again: only rows still without a tenant are
touched, and a run with nothing left to do changes nothing. It refuses, before writing anything,
when a table holds both rows without a tenant and rows of another tenant: whose the unowned rows
are is then a question only the app can answer.

Off the request path; the request path never sees a NULL ``tenant_id`` row (``tenant_id = :id``
never matches NULL), so an app may serve while adoption runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, func, literal_column, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnClause

from fastapi_tenancy.exceptions import ConfigurationError, TenancyError
from fastapi_tenancy.isolation.scoped import TENANT_COLUMN
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.tenancy import Tenancy

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "AdoptionRefused",
    "AdoptionReport",
    "TableAdoption",
    "UnownedRows",
    "adopt_rows",
    "unowned_rows",
]

DEFAULT_BATCH_SIZE = 1000


class AdoptionRefused(TenancyError):
    """Rows without a tenant sit next to another tenant's rows: nothing was changed."""


@dataclass(frozen=True)
class TableAdoption:
    """How many rows of one table were given to the tenant."""

    table: str
    rows: int


@dataclass(frozen=True)
class AdoptionReport:
    """What `adopt_rows` did: the tenant (created if it was new) and the rows per table."""

    tenant: Tenant
    created: bool
    tables: tuple[TableAdoption, ...]

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


@dataclass(frozen=True)
class UnownedRows:
    """A tenant table's rows without a tenant, and whether its column still accepts NULL.

    ``hidden``: PostgreSQL's row-level security applies to the role that counted, and its
    policies hide rows without a tenant, so ``rows`` is not to be trusted.
    """

    table: str
    rows: int
    nullable: bool
    hidden: bool = False


async def adopt_rows(
    tenancy: Tenancy,
    identifier: str,
    *,
    tables: Sequence[str] | None = None,
    name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> AdoptionReport:
    """Give every row without a tenant to tenant ``identifier``, creating the tenant if needed.

    ``tables`` limits the run to the named tables (``"name"`` or ``"schema.name"``); by default it
    covers every table in the central database with a ``tenant_id`` column, found by reflection,
    so tables only Alembic knows count too. Parents are adopted before their children, so a
    tenant foreign key already in place never sees a child before its parent.
    Raises `AdoptionRefused` (nothing written) when a table has rows without a tenant and rows of
    another tenant, and `ConfigurationError` outside row isolation or for an unknown table.
    """
    if batch_size < 1:
        raise ConfigurationError("the batch size must be at least 1")
    strategy = tenancy.settings.operations.isolation_strategy
    if strategy != "row":
        raise ConfigurationError(
            "tenants adopt gives existing rows to a tenant under row isolation; "
            f"TENANCY_ISOLATION_STRATEGY is {strategy!r} (see "
            "docs/adopting.md)"
        )
    # Reflected first: a mistyped --tables name fails before a tenant is created for it.
    found = await _tenant_tables(tenancy)
    chosen = _choose(found, tables)
    tenant = await tenancy.get_tenant(identifier)
    created = tenant is None
    if tenant is None:
        tenant = await tenancy.create_tenant(identifier, name=name)
    elif tenant.status in (TenantStatus.DELETED, TenantStatus.PURGING):
        raise AdoptionRefused(
            f"tenant {identifier!r} is {tenant.status.value}: restore it before giving it rows"
        )
    await _refuse_ambiguous(tenancy, tenant, chosen)
    done = [
        TableAdoption(table.fullname, await _adopt_table(tenancy.engine, table, tenant, batch_size))
        for table in chosen
    ]
    return AdoptionReport(tenant=tenant, created=created, tables=tuple(done))


async def unowned_rows(engine: AsyncEngine, tables: TenantTables) -> list[UnownedRows]:
    """Every tenant table with rows without a tenant or a ``tenant_id`` that accepts NULL.

    Row isolation serves none of these rows to any tenant; `fastapi-tenancy doctor` reports
    them. Read-only.
    """
    async with engine.connect() as conn:
        found = await conn.run_sync(tables.existing_scoped_tables)
        result = []
        for table in found:
            column = table.c[TENANT_COLUMN]
            count = await conn.scalar(
                select(func.count()).select_from(table).where(column.is_(None))
            )
            # A NOT NULL column has no such rows to hide.
            hidden = bool(column.nullable) and await _row_security_active(conn, table)
            if count or column.nullable or hidden:
                result.append(
                    UnownedRows(table.fullname, int(count or 0), bool(column.nullable), hidden)
                )
    return result


async def _row_security_active(conn: AsyncConnection, table: Table) -> bool:
    """Whether PostgreSQL applies row-level security to this role on ``table``: its policies
    match no row whose ``tenant_id`` is NULL, so such rows can be neither counted nor adopted."""
    if conn.dialect.name != "postgresql":
        return False
    name = conn.dialect.identifier_preparer.format_table(table)
    active = await conn.scalar(
        text("SELECT row_security_active(CAST(:t AS regclass))"), {"t": name}
    )
    return bool(active)


async def _tenant_tables(tenancy: Tenancy) -> list[Table]:
    tables = TenantTables(tenancy.settings.operations.tenant_metadata)
    async with tenancy.engine.connect() as conn:
        children_first: list[Table] = await conn.run_sync(tables.existing_scoped_tables)
    return list(reversed(children_first))


def _choose(found: list[Table], names: Sequence[str] | None) -> list[Table]:
    if names is None:
        return found
    by_name = {table.name: table for table in found} | {table.fullname: table for table in found}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ConfigurationError(
            f"no table named {', '.join(missing)} has a tenant_id column; add it with "
            "fastapi_tenancy.migrations.ops.add_tenant_column in a migration first"
        )
    wanted = {by_name[name].fullname for name in names}
    return [table for table in found if table.fullname in wanted]  # parents first, as found


async def _refuse_ambiguous(tenancy: Tenancy, tenant: Tenant, tables: list[Table]) -> None:
    clashes: list[tuple[str, str]] = []
    async with tenancy.engine.connect() as conn:
        hidden = [
            table.fullname
            for table in tables
            if table.c[TENANT_COLUMN].nullable and await _row_security_active(conn, table)
        ]
        if hidden:
            role = await conn.scalar(text("SELECT current_user"))
            raise AdoptionRefused(
                f"row-level security hides rows without a tenant from role {role!r} in "
                f"{', '.join(hidden)}: adopt as a role with BYPASSRLS (--database-url, with "
                "TENANCY_ROW_LEVEL_SECURITY=false for the command), or before "
                "`fastapi-tenancy rls enable`"
            )
        for table in tables:
            column = table.c[TENANT_COLUMN]
            unowned: Select[Any] = (
                select(literal_column("1")).select_from(table).where(column.is_(None))
            )
            if await conn.scalar(unowned.limit(1)) is None:
                continue
            other = await conn.scalar(
                select(column).where(column.is_not(None), column != tenant.id).limit(1)
            )
            if other is not None:
                clashes.append((table.fullname, str(other)))
    if not clashes:
        return
    names = {t.id: t.identifier for t in await tenancy.list_tenants(include_deleted=True)}
    described = ", ".join(
        f"{table} (tenant {names.get(owner, owner)!r})" for table, owner in clashes
    )
    raise AdoptionRefused(
        f"refusing to give rows without a tenant to {tenant.identifier!r}: other tenants' rows "
        f"share their tables, so whose they are is ambiguous: {described}; set their tenant_id "
        "by hand or name only unshared tables with --tables"
    )


async def _adopt_table(engine: AsyncEngine, table: Table, tenant: Tenant, batch_size: int) -> int:
    adopted = 0
    while True:
        # One short transaction per batch: locks stay small and a crash loses one batch at most.
        async with engine.begin() as conn:
            statement = await conn.run_sync(_batch, table, tenant.id, batch_size)
            changed = (await conn.execute(statement)).rowcount
        adopted += changed
        # Not "fewer than a batch": on PostgreSQL a row changed by someone else between the pick
        # and the update is skipped, and the next batch still finds the rest.
        if changed == 0:
            return adopted


def _batch(conn: Connection, table: Table, tenant_id: str, size: int) -> Update:
    """``UPDATE`` at most ``size`` rows without a tenant; no backend takes a primary key.

    PostgreSQL has no ``UPDATE ... LIMIT``: the rows are picked by ``ctid`` from an array, which
    the planner answers with a TID scan rather than joining the whole table each batch. SQLite
    picks them by ``rowid``; MariaDB/MySQL have ``UPDATE ... LIMIT``. The inner ``SELECT`` uses
    the ``tenant_id`` index (B-tree indexes hold NULLs on all three).
    """
    column = table.c[TENANT_COLUMN]
    # The IS NULL on the outer UPDATE too: a row another writer gave a tenant is never taken.
    statement = update(table).values({TENANT_COLUMN: tenant_id}).where(column.is_(None))
    dialect = conn.dialect.name
    if dialect == "postgresql":
        quoted = conn.dialect.identifier_preparer.format_table(table)
        name = conn.dialect.identifier_preparer.quote(TENANT_COLUMN)
        picked = text(
            f"ctid = ANY(ARRAY(SELECT ctid FROM {quoted} WHERE {name} IS NULL LIMIT :batch_size))"
        ).bindparams(batch_size=size)
        return statement.where(picked)
    if dialect in ("mysql", "mariadb"):
        return statement.with_dialect_options(**{f"{dialect}_limit": size})
    rowid: ColumnClause[Any] = literal_column("rowid")
    picked_rows = select(rowid).select_from(table).where(column.is_(None)).limit(size)
    return statement.where(rowid.in_(picked_rows))

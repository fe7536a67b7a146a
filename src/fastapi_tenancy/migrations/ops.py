"""Alembic steps that take an existing single-tenant table into row isolation.

An app that already has data adds ``tenant_id`` in three steps (docs/adopting.md)::

    # revision 1: the column, nullable, so existing rows stay valid
    from fastapi_tenancy.migrations.ops import add_tenant_column

    def upgrade() -> None:
        add_tenant_column(op, "customers")

    # then: fastapi-tenancy tenants adopt acme    (existing rows -> the first tenant)

    # revision 2: every row has a tenant, so the column can refuse NULL
    from fastapi_tenancy.migrations.ops import enforce_tenant_column

    def upgrade() -> None:
        enforce_tenant_column(op, "customers")

The column has the public type `fastapi_tenancy.tenant_id_type` and the index `TenantScoped`
declares (``ix_<table>_tenant_id``), so Alembic's autogenerate finds nothing left to change once
the model inherits `TenantScoped`. Every step works on PostgreSQL, MariaDB/MySQL and SQLite
(where changing a column's nullability rebuilds the table through Alembic's batch mode). Nothing
here needs the fastapi-tenancy runner: the steps run in the app's own Alembic history.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

from sqlalchemy import Column, column, func, select, table

from fastapi_tenancy.isolation.scoped import TENANT_COLUMN, tenant_id_type
from fastapi_tenancy.migrations.errors import MigrationError

if TYPE_CHECKING:
    from alembic.operations import Operations

# What a revision passes: ``alembic.op`` (a module proxying the current operations) or an
# `Operations` object of one's own.
Op: TypeAlias = "Operations | ModuleType"

__all__ = [
    "add_tenant_column",
    "drop_tenant_column",
    "enforce_tenant_column",
    "relax_tenant_column",
    "tenant_index_name",
]


def tenant_index_name(table_name: str) -> str:
    """The name of the ``tenant_id`` index: SQLAlchemy's default for ``index=True``, which
    `TenantScoped` sets, so a model and its migrated table agree."""
    return f"ix_{table_name}_{TENANT_COLUMN}"


def add_tenant_column(
    op: Op, table_name: str, *, schema: str | None = None, index_name: str | None = None
) -> None:
    """Add a nullable ``tenant_id`` column and its index to an existing table.

    Existing rows get NULL: no tenant sees them until ``fastapi-tenancy tenants adopt`` gives
    them to one. ``index_name`` overrides the default when the app's metadata has its own naming
    convention for indexes.
    """
    op.add_column(table_name, Column(TENANT_COLUMN, tenant_id_type(), nullable=True), schema=schema)
    op.create_index(
        op.f(index_name or tenant_index_name(table_name)),
        table_name,
        [TENANT_COLUMN],
        schema=schema,
    )


def enforce_tenant_column(op: Op, table_name: str, *, schema: str | None = None) -> None:
    """Make ``tenant_id`` NOT NULL, once every row has a tenant.

    Refuses with `MigrationError` naming the table while rows without a tenant remain, before
    the database would fail the ALTER with its own message (offline ``--sql`` runs cannot count
    and leave the check to the database).
    """
    if not op.get_context().as_sql:
        rows = table(table_name, column(TENANT_COLUMN), schema=schema)
        count = op.get_bind().scalar(
            select(func.count()).select_from(rows).where(rows.c[TENANT_COLUMN].is_(None))
        )
        if count:
            shown = f"{schema}.{table_name}" if schema else table_name
            raise MigrationError(
                f"{shown} has {count} row(s) without a tenant: give them to one with "
                "`fastapi-tenancy tenants adopt <identifier>` before enforcing NOT NULL"
            )
    _set_nullable(op, table_name, schema=schema, nullable=False)


def relax_tenant_column(op: Op, table_name: str, *, schema: str | None = None) -> None:
    """Make ``tenant_id`` nullable again: the downgrade of `enforce_tenant_column`."""
    _set_nullable(op, table_name, schema=schema, nullable=True)


def drop_tenant_column(
    op: Op, table_name: str, *, schema: str | None = None, index_name: str | None = None
) -> None:
    """Drop the index and the ``tenant_id`` column: the downgrade of `add_tenant_column`."""
    op.drop_index(op.f(index_name or tenant_index_name(table_name)), table_name, schema=schema)
    # Batch mode: SQLite before 3.35 cannot drop a column in place; elsewhere it is one ALTER.
    with op.batch_alter_table(table_name, schema=schema) as batch:
        batch.drop_column(TENANT_COLUMN)


def _set_nullable(op: Op, table_name: str, *, schema: str | None, nullable: bool) -> None:
    # SQLite cannot change a column's nullability in place: batch mode copies the table there
    # (indexes included) and issues a plain ALTER elsewhere. MariaDB/MySQL restate the whole
    # column, so the type goes along.
    with op.batch_alter_table(table_name, schema=schema) as batch:
        batch.alter_column(TENANT_COLUMN, existing_type=tenant_id_type(), nullable=nullable)

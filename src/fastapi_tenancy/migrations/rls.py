"""Row-level security in Alembic migrations: put tenant tables under the tenant policy.

In a migration that creates tenant tables (run as the tables' owner)::

    from alembic import op
    from fastapi_tenancy.migrations.rls import (
        disable_row_level_security,
        enable_row_level_security,
    )

    def upgrade() -> None:
        op.create_table("items", ...)
        enable_row_level_security(op, ["items"])

    def downgrade() -> None:
        disable_row_level_security(op, ["items"])
        op.drop_table("items")

Both run inside the migration's transaction and are safe to repeat: enabling again replaces the
policy, it never adds a second one. This module holds the policy DDL, which runs off the request
path (here, in ``fastapi-tenancy rls enable``, in tests); `fastapi_tenancy.isolation.rls` holds
what the runtime needs: the per-transaction binding and the start-up check of the catalogs.
It needs neither Alembic nor the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, Dialect

from fastapi_tenancy.isolation.rls import (
    CURRENT_TENANT,
    POLICY_NAME,
    TENANT_COLUMN,
    TableRef,
    require_postgres,
    table_sql,
)

__all__ = [
    "apply_policies",
    "disable_row_level_security",
    "disable_statements",
    "enable_row_level_security",
    "enable_statements",
    "remove_policies",
    "tenant_tables",
]


class _BindProvider(Protocol):
    # Alembic's ``op`` (the module proxy and `Operations`) hands out its connection this way.
    def get_bind(self) -> Connection: ...


def _connection(target: _BindProvider | Connection) -> Connection:
    return target if isinstance(target, Connection) else target.get_bind()


def enable_row_level_security(
    target: _BindProvider | Connection, tables: Iterable[TableRef] | MetaData
) -> list[str]:
    """Enable and force RLS, with the tenant policy, on ``tables``; returns the DDL it ran.

    ``target`` is Alembic's ``op`` or a `Connection`. ``tables`` are `Table` objects, table
    names (each quoted as one identifier, so pass a `Table` for another schema), or a `MetaData`
    whose tables with a ``tenant_id`` column are meant.
    """
    return apply_policies(_connection(target), tables)


def disable_row_level_security(
    target: _BindProvider | Connection, tables: Iterable[TableRef] | MetaData
) -> list[str]:
    """Drop the tenant policy and turn RLS off on ``tables``; returns the DDL it ran."""
    return remove_policies(_connection(target), tables)


def tenant_tables(tables: Iterable[TableRef] | MetaData) -> list[TableRef]:
    """``tables`` as a list; a MetaData stands for its tables with a ``tenant_id`` column."""
    if isinstance(tables, MetaData):
        return [table for table in tables.sorted_tables if TENANT_COLUMN in table.c]
    return list(tables)


def enable_statements(dialect: Dialect, table: TableRef) -> list[str]:
    """The DDL that puts ``table`` under the tenant policy; safe to run again."""
    name = table_sql(require_postgres(dialect), table)
    policy = dialect.identifier_preparer.quote_identifier(POLICY_NAME)
    column = dialect.identifier_preparer.quote_identifier(TENANT_COLUMN)
    condition = f"{column} = {CURRENT_TENANT}"
    return [
        f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
        # FORCE: the owner is subject to the policy too (without it, owners skip RLS).
        f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
        # Drop and create in the caller's transaction: re-running replaces the policy, never
        # duplicates it, and no other transaction sees the table without one.
        f"DROP POLICY IF EXISTS {policy} ON {name}",
        f"CREATE POLICY {policy} ON {name} AS PERMISSIVE FOR ALL TO PUBLIC "
        f"USING ({condition}) WITH CHECK ({condition})",
    ]


def disable_statements(dialect: Dialect, table: TableRef) -> list[str]:
    """The DDL that takes ``table`` back out from under row-level security."""
    name = table_sql(require_postgres(dialect), table)
    policy = dialect.identifier_preparer.quote_identifier(POLICY_NAME)
    return [
        f"DROP POLICY IF EXISTS {policy} ON {name}",
        f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY",
    ]


def apply_policies(connection: Connection, tables: Iterable[TableRef] | MetaData) -> list[str]:
    """Enable, force and (re)create the tenant policy on every table; returns the DDL it ran.

    Runs in ``connection``'s transaction: commit it (``engine.begin()``) for the change to stick.
    Must run as the tables' owner (or a superuser).
    """
    return _run(connection, tables, enable_statements)


def remove_policies(connection: Connection, tables: Iterable[TableRef] | MetaData) -> list[str]:
    """Undo `apply_policies` on every table (for a migration's downgrade)."""
    return _run(connection, tables, disable_statements)


def _run(
    connection: Connection,
    tables: Iterable[TableRef] | MetaData,
    build: Callable[[Dialect, TableRef], list[str]],
) -> list[str]:
    statements = [
        sql for table in tenant_tables(tables) for sql in build(connection.dialect, table)
    ]
    for sql in statements:
        connection.execute(text(sql))
    return statements

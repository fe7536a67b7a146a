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
policy, it never adds a second one. The DDL is in `fastapi_tenancy.isolation.rls`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from fastapi_tenancy.isolation.rls import TableRef, apply_policies, remove_policies

__all__ = ["disable_row_level_security", "enable_row_level_security"]


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

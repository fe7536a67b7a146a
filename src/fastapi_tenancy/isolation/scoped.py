"""`TenantScoped`: the mixin that marks a model as holding one tenant's rows."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import ForeignKeyConstraint, MetaData, String, Table, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column

from fastapi_tenancy.exceptions import ConfigurationError

__all__ = [
    "TENANT_COLUMN",
    "TENANT_ID_LENGTH",
    "TenantScoped",
    "tenant_id_type",
    "tenant_scoped_classes",
]

TENANT_ID_LENGTH = 64
TENANT_COLUMN = "tenant_id"


def tenant_id_type() -> String:
    """The SQL type of every ``tenant_id`` column: ``String(64)`` (``VARCHAR(64)``).

    Public and stable: `TenantScoped` declares its column with it, Alembic's autogenerate renders
    it as ``sa.String(length=64)``, and a hand-written migration that adds the column to an
    existing table (`fastapi_tenancy.migrations.ops.add_tenant_column`) uses it too. Tenant ids
    are 32 hex characters; the room up to 64 is for ids an app assigns itself.
    """
    return String(TENANT_ID_LENGTH)


class TenantScoped:
    """Gives a declarative model a ``tenant_id`` column and puts it under tenant isolation.

    Under ``row`` isolation every ORM SELECT, UPDATE and DELETE on the model is filtered to the
    session's tenant and every INSERT is stamped with it::

        class Item(TenantScoped, Base):
            __tablename__ = "items"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str]
    """

    tenant_id: Mapped[str] = mapped_column(tenant_id_type(), index=True, nullable=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _subclasses.append(cls)

    @staticmethod
    def tenant_foreign_key(column: str, target: str, **options: Any) -> ForeignKeyConstraint:
        """A foreign key on ``(tenant_id, column)``: a row can only reference its own tenant's.

        ``target`` is ``"table.column"`` (or ``"schema.table.column"``) of another
        `TenantScoped` table; ``options`` go to `ForeignKeyConstraint` (``ondelete=...``, ``name``).
        The database refuses a reference to another tenant's row exactly as it refuses one to a
        row that does not exist. The unique key ``(tenant_id, column)`` the database needs on the
        referenced table is added to that table, whichever of the two is defined first::

            class Note(TenantScoped, Base):
                __tablename__ = "notes"
                id: Mapped[int] = mapped_column(primary_key=True)
                item_id: Mapped[int]
                __table_args__ = (TenantScoped.tenant_foreign_key("item_id", "items.id"),)
        """
        table, _, key = target.rpartition(".")
        if not table or not key or column == TENANT_COLUMN:
            raise ConfigurationError(
                f"tenant_foreign_key({column!r}, {target!r}): name a column of this table and "
                "the referenced 'table.column'"
            )
        constraint = ForeignKeyConstraint(
            [TENANT_COLUMN, column], [f"{table}.{TENANT_COLUMN}", target], **options
        )
        event.listen(
            constraint,
            "after_parent_attach",
            lambda _constraint, child: _key_referenced_table(child, table, key),
        )
        return constraint


_subclasses: list[type[Any]] = []
# Referenced tables not defined yet: metadata -> table key -> columns that need a tenant key.
_pending_keys: WeakKeyDictionary[MetaData, dict[str, set[str]]] = WeakKeyDictionary()


def tenant_scoped_classes() -> list[type[Any]]:
    """Every mapped model class that inherits `TenantScoped`, in definition order."""
    return [cls for cls in _subclasses if "__table__" in vars(cls)]


def _key_referenced_table(child: Table, table_key: str, column: str) -> None:
    metadata = child.metadata
    referenced = metadata.tables.get(table_key)
    if referenced is None:
        _pending_keys.setdefault(metadata, {}).setdefault(table_key, set()).add(column)
    else:
        _add_tenant_key(referenced, column)


@event.listens_for(Table, "after_parent_attach")
def _key_table_on_definition(table: Table, metadata: Any) -> None:
    pending = _pending_keys.get(metadata) if isinstance(metadata, MetaData) else None
    if pending:
        for column in pending.pop(table.key, set()):
            _add_tenant_key(table, column)


def _add_tenant_key(table: Table, column: str) -> None:
    wanted = {TENANT_COLUMN, column}
    keys = [table.primary_key, *(c for c in table.constraints if isinstance(c, UniqueConstraint))]
    if any(set(key.columns.keys()) == wanted for key in keys):
        return
    # Foreign keys need a unique key on exactly the referenced columns (PostgreSQL, SQLite) or an
    # index that starts with them (MariaDB): (tenant_id, column) serves all three.
    table.append_constraint(UniqueConstraint(TENANT_COLUMN, column))

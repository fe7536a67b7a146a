"""⑤ Foreign keys between tenant tables: a row may reference only rows of its own tenant.

A plain foreign key (``ForeignKey("items.id")``) is checked by the database against every
tenant's rows, PostgreSQL's row-level security included: on its own it would let a tenant point
at another tenant's row, learn which ids exist elsewhere from the answer, and stop that tenant
from deleting its own row. `TenantScoped.tenant_foreign_key` makes such a reference impossible in
the schema. For plain foreign keys between tenant tables this module checks the values a tenant
session writes, before any of them reach the database:

* at flush (``before_flush``): every new or changed foreign key value of a `TenantScoped` object,
  and every many-to-one related object;
* on ORM ``insert(Model)`` / ``update(Model)`` statements (``do_orm_execute``): the values they set.

The check asks the database once per referenced table and batch, in the session's tenant, which
of the referenced keys exist there. A key that exists in another tenant and one that exists
nowhere get the same `CrossTenantAccess` with the same message, after the same query.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, ForeignKeyConstraint, Table, inspect, select, tuple_
from sqlalchemy.orm import (
    InstanceState,
    Mapper,
    ORMExecuteState,
    RelationshipDirection,
    Session,
)
from sqlalchemy.sql import ClauseElement, FromClause
from sqlalchemy.sql.elements import BindParameter

from fastapi_tenancy.exceptions import CrossTenantAccess
from fastapi_tenancy.isolation.scoped import TENANT_COLUMN, TenantScoped

__all__ = ["check_flushed_references", "check_statement_references", "plain_tenant_references"]

Key = tuple[Any, ...]
KEYS_PER_QUERY = 5000


@lru_cache(maxsize=1024)
def plain_tenant_references(table: Table) -> tuple[ForeignKeyConstraint, ...]:
    """``table``'s foreign keys to tenant tables that do not include ``tenant_id`` themselves."""
    if TENANT_COLUMN not in table.c:
        return ()
    return tuple(
        fk
        for fk in table.foreign_key_constraints
        if TENANT_COLUMN not in fk.column_keys and TENANT_COLUMN in fk.referred_table.c
    )


def _refusal(fk: ForeignKeyConstraint, owner: str) -> CrossTenantAccess:
    # Only the constraint and the caller's own model are named: the same words whether the key
    # exists in another tenant or nowhere.
    columns = ", ".join(fk.column_keys)
    return CrossTenantAccess(
        f"{owner}.{columns} must reference a {fk.referred_table.name} row of the current tenant"
    )


@dataclass
class _References:
    """The keys one batch references, per foreign key, and the keys it inserts itself."""

    wanted: dict[ForeignKeyConstraint, dict[Key, str]] = field(default_factory=dict)
    provided: dict[ForeignKeyConstraint, set[Key]] = field(default_factory=dict)

    def want(self, fk: ForeignKeyConstraint, key: Key, owner: str) -> None:
        if all(value is not None for value in key):
            self.wanted.setdefault(fk, {}).setdefault(key, owner)

    def check(self, session: Session, tenant_id: str) -> None:
        if not self.wanted:
            return
        for fk, keys in self.wanted.items():
            missing = set(keys) - self.provided.get(fk, set())
            if missing:
                missing -= _existing(session, fk, tenant_id, missing)
            if missing:
                raise _refusal(fk, keys[min(missing, key=repr)])


def _existing(
    session: Session, fk: ForeignKeyConstraint, tenant_id: str, keys: set[Key]
) -> set[Key]:
    table = fk.referred_table
    columns = [element.column for element in fk.elements]
    target: Any = columns[0] if len(columns) == 1 else tuple_(*columns)
    wanted = [key[0] for key in keys] if len(columns) == 1 else list(keys)
    found: set[Key] = set()
    # Batches stay under every driver's limit on bound parameters (SQLite's is 32766).
    for start in range(0, len(wanted), KEYS_PER_QUERY):
        batch = wanted[start : start + KEYS_PER_QUERY]
        statement = select(*columns).where(table.c[TENANT_COLUMN] == tenant_id, target.in_(batch))
        found.update(tuple(row) for row in session.execute(statement))
    return found


def check_flushed_references(session: Session, tenant_id: str) -> None:
    """Refuse a flush that writes a reference to a row ``tenant_id`` does not have."""
    new = [obj for obj in session.new if isinstance(obj, TenantScoped)]
    dirty = [obj for obj in session.dirty if isinstance(obj, TenantScoped)]
    if not (new or dirty):
        return
    references = _References()
    for objects, changed_only in ((new, False), (dirty, True)):
        for obj in objects:
            state: InstanceState[Any] = inspect(obj)
            _want_columns(references, state, changed_only=changed_only)
            _refuse_foreign_related(tenant_id, state)
    for fk in references.wanted:
        references.provided[fk] = set(_inserted_keys(fk, new))
    references.check(session, tenant_id)


def _want_columns(
    references: _References, state: InstanceState[Any], *, changed_only: bool
) -> None:
    mapper = state.mapper
    for table in mapper.tables:
        for fk in plain_tenant_references(table):
            keys = [mapper.get_property_by_column(column).key for column in fk.columns]
            if changed_only and not any(state.attrs[key].history.has_changes() for key in keys):
                continue
            references.want(fk, tuple(state.dict.get(key) for key in keys), mapper.class_.__name__)


def _refuse_foreign_related(tenant_id: str, state: InstanceState[Any]) -> None:
    # A many-to-one object fills the foreign key during the flush: its tenant is known in memory.
    for relationship in state.mapper.relationships:
        if relationship.direction is not RelationshipDirection.MANYTOONE:
            continue
        related = state.dict.get(relationship.key)
        if isinstance(related, TenantScoped) and related.tenant_id not in (None, tenant_id):
            raise CrossTenantAccess(
                f"{state.mapper.class_.__name__}.{relationship.key} must reference a "
                f"{relationship.mapper.local_table.description} row of the current tenant"
            )


def _inserted_keys(fk: ForeignKeyConstraint, new: Iterable[Any]) -> Iterator[Key]:
    # Rows inserted by the same flush may be referenced by it (parent and child added together).
    table = fk.referred_table
    for obj in new:
        mapper: Mapper[Any] = inspect(obj).mapper
        if table in mapper.tables:
            yield tuple(
                getattr(obj, mapper.get_property_by_column(element.column).key)
                for element in fk.elements
            )


def check_statement_references(state: ORMExecuteState, tenant_id: str) -> None:
    """Refuse an ORM INSERT or UPDATE that sets a reference to a row ``tenant_id`` lacks."""
    if not (state.is_insert or state.is_update):
        return
    mapper = state.bind_mapper
    if mapper is None or not issubclass(mapper.class_, TenantScoped):
        return
    table = mapper.local_table
    if not isinstance(table, Table):
        return
    references = _References()
    for fk in plain_tenant_references(table):
        for row in _statement_rows(state, table):
            key = _row_key(fk, row, mapper)
            if key is not None:
                references.want(fk, key, mapper.class_.__name__)
    references.check(state.session, tenant_id)


def _statement_rows(state: ORMExecuteState, table: FromClause) -> Iterator[Mapping[Any, Any]]:
    parameters = state.parameters
    if isinstance(parameters, list):
        yield from parameters
    elif isinstance(parameters, Mapping) and parameters:
        yield parameters
    statement: Any = state.statement
    for rows in getattr(statement, "_multi_values", ()):
        for row in rows:
            # insert(Model).values([...]) takes dicts, or tuples in the table's column order.
            yield row if isinstance(row, Mapping) else dict(zip(table.c.keys(), row, strict=False))
    values = getattr(statement, "_values", None)
    if values:
        yield values


def _row_key(fk: ForeignKeyConstraint, row: Mapping[Any, Any], mapper: Mapper[Any]) -> Key | None:
    plain = {_name(name): value for name, value in row.items()}
    key = []
    for column in fk.columns:
        names = (column.key, mapper.get_property_by_column(column).key)
        present = [plain[name] for name in names if name in plain]
        if not present:
            return None
        value = present[0].value if isinstance(present[0], BindParameter) else present[0]
        if isinstance(value, ClauseElement):
            # An SQL expression is evaluated by the database, after this check could see it.
            raise CrossTenantAccess(
                f"{mapper.class_.__name__}.{column.key} references a tenant table: set it to a "
                "value, not an SQL expression (or use TenantScoped.tenant_foreign_key)"
            )
        key.append(value)
    return tuple(key)


def _name(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, Column):
        return key.key
    return str(getattr(key, "key", key))

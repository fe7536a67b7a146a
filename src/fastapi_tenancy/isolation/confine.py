"""What row isolation checks beyond the loader criteria: written values, upserts, inheritance.

`fastapi_tenancy.isolation.row` adds ``tenant_id = :tenant`` to every ORM statement with a
loader-criteria option; the functions here cover what that option cannot reach:

* where a scoped table's ``tenant_id`` is *written* (``.values()``, execute parameters, multi-row
  values, ``from_select``, the SET of an upsert), the value must be the session's tenant as a plain
  value or a bound parameter holding it; anything else (an expression, a subquery, a parameter
  naming another tenant) raises `CrossTenantAccess` before any SQL runs;
* ``ON CONFLICT DO UPDATE`` (PostgreSQL, SQLite) gets ``WHERE <table>.tenant_id = :tenant``, and
  each assignment of MariaDB/MySQL's ``ON DUPLICATE KEY UPDATE`` (which has no WHERE) becomes
  ``CASE WHEN <table>.tenant_id = :tenant THEN <new> ELSE <column> END``: a conflicting row of
  another tenant is left as it is;
* UPDATE and DELETE of a joined-inheritance subclass get the join to the table holding
  ``tenant_id``, which the ORM leaves out, and every other scoped entity they name (``UPDATE ...
  FROM``, ``DELETE ... USING``) gets its own ``tenant_id = :tenant``;
* statements that name an unscoped class with a `TenantScoped` subclass are refused;
* a flush, and the legacy ``bulk_save_objects`` / ``bulk_update_mappings``, verify in one SELECT
  per class that the rows they are about to UPDATE or DELETE are the session tenant's
  (`verify_flush`, `verify_mappings`).

Facts about a mapper are computed once per mapper (`scoped_facts`), so a plain ``select(M)`` pays
for none of this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import and_, case, event, inspect, literal, select, tuple_
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.context import FromStatement
from sqlalchemy.sql import CompoundSelect, Select, visitors
from sqlalchemy.sql.elements import (
    BindParameter,
    ClauseElement,
    ColumnClause,
    ColumnElement,
    Label,
)
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.util import surface_expressions as _surface_expressions

from fastapi_tenancy.exceptions import CrossTenantAccess
from fastapi_tenancy.isolation.scoped import TenantScoped

__all__ = [
    "ScopedFacts",
    "check_parameters",
    "confine_column_load",
    "confine_insert",
    "confine_update_or_delete",
    "other_entity_criteria",
    "refuse_leaky_bases",
    "scoped_facts",
    "verify_flush",
    "verify_mappings",
]

TENANT_KEY = "tenant_id"

# The column expressions of a clause, not those inside its subqueries (untyped in SQLAlchemy).
surface_expressions = cast("Callable[[Any], Iterable[Any]]", _surface_expressions)
_VERIFY_CHUNK = 500

_ON_CONFLICT_DO_UPDATE = (postgresql.dml.OnConflictDoUpdate, sqlite.dml.OnConflictDoUpdate)
_ON_DUPLICATE_KEY = mysql.dml.OnDuplicateClause


@dataclass(frozen=True, slots=True)
class ScopedFacts:
    """Where a `TenantScoped` mapper keeps ``tenant_id``, computed once per mapper."""

    mapper: Mapper[Any]
    tenant_mapper: Mapper[Any]
    """The mapper (this one or an ancestor) whose own table holds ``tenant_id``."""
    tenant_column: Column[Any]
    joins_to_tenant_table: tuple[ColumnElement[bool], ...]
    """Inherit conditions from this mapper's table up to the tenant table; empty when it is one."""
    joins_to_root: tuple[ColumnElement[bool], ...]
    """Every inherit condition from this mapper's table up to the root's. A key-only SELECT may
    name any table of the hierarchy (the primary key lives in the root's, which need not hold
    ``tenant_id``); with these conditions the tenant condition applies to that very row instead
    of a cartesian product."""


@cache
def scoped_facts(mapper: Mapper[Any]) -> ScopedFacts | None:
    """The facts of a `TenantScoped` mapper, or None for an unscoped (shared) one."""
    if not issubclass(mapper.class_, TenantScoped):
        return None
    joins: list[ColumnElement[bool]] = []
    current = mapper
    while TENANT_KEY not in current.local_table.c:
        if current.inherits is None or current.inherit_condition is None:
            return None
        joins.append(current.inherit_condition)
        current = current.inherits
    column = current.local_table.c[TENANT_KEY]
    assert isinstance(column, Column)
    to_root = tuple(
        m.inherit_condition for m in mapper.iterate_to_root() if m.inherit_condition is not None
    )
    return ScopedFacts(mapper, current, column, tuple(joins), to_root)


# Unscoped mappers with a TenantScoped descendant: ``select(Base)`` would return every tenant's
# subclass rows. Filled as mappers are configured; empty in most applications.
_leaky_bases: set[Mapper[Any]] = set()


@event.listens_for(Mapper, "mapper_configured")
def _note_leaky_bases(mapper: Mapper[Any], cls: type[Any]) -> None:
    if issubclass(cls, TenantScoped):
        _leaky_bases.update(
            m for m in mapper.iterate_to_root() if not issubclass(m.class_, TenantScoped)
        )


def refuse_leaky_bases(statement: Any) -> None:
    """Refuse a statement naming an unscoped class whose subclass is `TenantScoped`."""
    if not _leaky_bases:
        return
    for element in visitors.iterate(statement):
        mapper = getattr(element, "_annotations", {}).get("parentmapper")
        if mapper in _leaky_bases:
            scoped = sorted(
                m.class_.__name__ for m in mapper.self_and_descendants if scoped_facts(m)
            )
            raise CrossTenantAccess(
                f"{mapper.class_.__name__} is not TenantScoped but its subclasses "
                f"{', '.join(scoped)} are: a statement on {mapper.class_.__name__} would reach "
                "every tenant's rows of them. Put TenantScoped on the base class, or query the "
                "TenantScoped subclasses themselves"
            )


def _refuse(construct: str, fix: str) -> CrossTenantAccess:
    return CrossTenantAccess(f"{construct}: {fix}")


_LEAVE_IT_OUT = "leave tenant_id out and it is stamped with the current tenant"


def _check_tenant_value(
    value: Any, tenant_id: str, rows: Sequence[Mapping[str, Any]], where: str
) -> None:
    """Accept a written tenant_id only when it provably is the session's tenant."""
    if isinstance(value, BindParameter):
        if value.callable is not None:
            raise _refuse(
                f"tenant_id in {where} is a callable bindparam, which may name another tenant",
                _LEAVE_IT_OUT,
            )
        candidates = [row[value.key] for row in rows if value.key in row]
        if len(candidates) < len(rows) or not rows:
            candidates.append(value.value)
        if all(candidate == tenant_id for candidate in candidates):
            return
        raise _refuse(
            f"tenant_id in {where} (bindparam {value.key!r}) names another tenant", _LEAVE_IT_OUT
        )
    if isinstance(value, ColumnElement):
        raise _refuse(
            f"tenant_id in {where} is an SQL expression ({type(value).__name__}), which may name "
            "another tenant",
            "only a plain value equal to the current tenant's id is accepted; " + _LEAVE_IT_OUT,
        )
    if value != tenant_id:
        raise CrossTenantAccess(f"tenant_id in {where} names another tenant: {_LEAVE_IT_OUT}")


def _key_name(key: Any) -> str:
    return key if isinstance(key, str) else str(getattr(key, "key", key))


def _tenant_value(values: Mapping[Any, Any] | None) -> tuple[bool, Any]:
    for key, value in (values or {}).items():
        if _key_name(key) == TENANT_KEY:
            return True, value
    return False, None


def check_parameters(rows: Sequence[Mapping[str, Any]], tenant_id: str) -> None:
    """Refuse execute() parameters that set tenant_id to anything but the session's tenant."""
    for row in rows:
        if TENANT_KEY in row and row[TENANT_KEY] != tenant_id:
            raise CrossTenantAccess(
                "an execute() parameter sets tenant_id to another tenant: " + _LEAVE_IT_OUT
            )


def parameter_rows(parameters: Any) -> list[Mapping[str, Any]]:
    if isinstance(parameters, list):
        return parameters
    if isinstance(parameters, Mapping) and parameters:
        return [parameters]
    return []


def check_statement_values(
    statement: Any, rows: Sequence[Mapping[str, Any]], tenant_id: str
) -> bool:
    """Check tenant_id in ``.values()``; whether the statement writes it at all."""
    present, value = _tenant_value(getattr(statement, "_values", None))
    if present:
        _check_tenant_value(value, tenant_id, rows, ".values()")
    return present


def confine_insert(
    statement: Any, parameters: Any, facts: ScopedFacts, tenant_id: str
) -> tuple[Any, Any]:
    """Check and stamp tenant_id of an ORM INSERT into a scoped table; returns both, rewritten."""
    if facts.joins_to_tenant_table and statement._post_values_clause is not None:
        raise CrossTenantAccess(
            f"an upsert on {facts.mapper.class_.__name__}, a joined-inheritance subclass, cannot "
            "be confined to one tenant: its tenant_id lives in another table; select the row in "
            "your own tenant first, then update or insert it"
        )
    if any("replace" in str(prefix).lower() for prefix, _ in statement._prefixes):
        raise CrossTenantAccess(
            "INSERT OR REPLACE deletes the row that holds the key, whichever tenant's it is: use "
            "on_conflict_do_update(), which row isolation confines to the current tenant"
        )
    rows = parameter_rows(parameters)
    check_parameters(rows, tenant_id)
    if statement._post_values_clause is not None:
        statement = _confine_upsert(statement, facts, tenant_id, rows)
    if statement.select is not None:
        return _confine_from_select(statement, facts, tenant_id, rows), parameters
    multi = statement._multi_values
    if multi:
        stamped = []
        for batch in multi:
            stamped_batch = []
            for row in batch:
                present, value = _tenant_value(row)
                if present:
                    _check_tenant_value(value, tenant_id, rows, "a multi-row .values()")
                    stamped_batch.append(row)
                else:
                    stamped_batch.append({**row, facts.tenant_column: tenant_id})
            stamped.append(stamped_batch)
        rewritten = statement._generate()
        rewritten._multi_values = tuple(stamped)
        return rewritten, parameters
    if check_statement_values(statement, rows, tenant_id):
        return statement, parameters
    if isinstance(parameters, list):
        return statement, [{**row, TENANT_KEY: tenant_id} for row in parameters]
    if rows:
        return statement, {**rows[0], TENANT_KEY: tenant_id}
    return statement.values({TENANT_KEY: tenant_id}), parameters


def _confine_from_select(
    statement: Any, facts: ScopedFacts, tenant_id: str, rows: Sequence[Mapping[str, Any]]
) -> Any:
    names = [_key_name(name) for name in statement._select_names]
    source = statement.select
    if TENANT_KEY in names:
        index = names.index(TENANT_KEY)
        for branch in _union_branches(source):
            value = branch.selected_columns[index]
            while isinstance(value, Label):
                value = value.element
            if not _is_filtered_tenant_column(value):
                _check_tenant_value(value, tenant_id, rows, "the SELECT of insert().from_select()")
        return statement
    stamp = literal(tenant_id, facts.tenant_column.type).label(TENANT_KEY)
    if hasattr(source, "add_columns"):
        source = source.add_columns(stamp)
    else:
        inner = source.subquery()
        source = select(*inner.c, stamp)
    rewritten = statement._generate()
    rewritten._select_names = [*statement._select_names, TENANT_KEY]
    rewritten.select = source
    return rewritten


def _union_branches(source: Any) -> list[Any]:
    # A UNION's column list is its first SELECT's; every SELECT in it supplies rows.
    if isinstance(source, CompoundSelect):
        return [branch for inner in source.selects for branch in _union_branches(inner)]
    return [source]


def _is_filtered_tenant_column(value: Any) -> bool:
    # An ORM attribute ``Model.tenant_id`` of a scoped entity: the loader criteria confine the
    # SELECT it comes from, so it holds the session's tenant.
    mapper = getattr(value, "_annotations", {}).get("parentmapper")
    return (
        isinstance(value, ColumnClause)
        and value.key == TENANT_KEY
        and mapper is not None
        and scoped_facts(mapper) is not None
    )


def _is_proposed_tenant(value: Any, table: Table) -> bool:
    # ``excluded.tenant_id`` / ``inserted.tenant_id``: the row being inserted, stamped already.
    source: Any = getattr(value, "table", None)
    return (
        isinstance(value, ColumnClause)
        and value.key == TENANT_KEY
        and getattr(source, "name", None) in ("excluded", "inserted")
        and source.is_derived_from(table)
    )


def _confine_upsert(
    statement: Any, facts: ScopedFacts, tenant_id: str, rows: Sequence[Mapping[str, Any]]
) -> Any:
    clause: Any = statement._post_values_clause
    confined: Any
    table = facts.tenant_column.table
    assert isinstance(table, Table)
    own_row = facts.tenant_column == tenant_id
    if isinstance(clause, _ON_CONFLICT_DO_UPDATE):
        sets = _without_tenant(clause.update_values_to_set, table, tenant_id, rows)
        if not sets:
            raise CrossTenantAccess(
                "ON CONFLICT DO UPDATE that only sets tenant_id would move a row between tenants: "
                "use on_conflict_do_nothing()"
            )
        confined = clause._clone()
        confined.update_values_to_set = sets
        where = clause.update_whereclause
        confined.update_whereclause = own_row if where is None else and_(own_row, where)
    elif isinstance(clause, _ON_DUPLICATE_KEY):
        if statement._returning:
            # MariaDB returns the row that holds the key, whichever tenant it belongs to.
            raise CrossTenantAccess(
                "RETURNING with ON DUPLICATE KEY UPDATE hands back the row that holds the key, "
                "whichever tenant's it is: drop returning() and select the row in your own "
                "tenant afterwards"
            )
        # MariaDB/MySQL have no WHERE here: each assignment keeps the old value unless the row
        # that holds the key is this tenant's. tenant_id itself is never assigned, so every
        # CASE compares the row's stored tenant.
        kept = _without_tenant(clause.update, table, tenant_id, rows)
        if not kept:
            raise CrossTenantAccess(
                "ON DUPLICATE KEY UPDATE that only sets tenant_id would move a row between "
                "tenants: use INSERT IGNORE semantics (prefix_with('IGNORE')) instead"
            )
        confined = clause._clone()
        confined.update = {
            key: case((own_row, value), else_=table.c[key]) for key, value in kept.items()
        }
        if clause._parameter_ordering:
            confined._parameter_ordering = [k for k in clause._parameter_ordering if k in kept]
    else:
        return statement
    rewritten = statement._generate()
    rewritten._post_values_clause = confined
    return rewritten


def _without_tenant(
    assignments: Mapping[Any, Any], table: Table, tenant_id: str, rows: Sequence[Mapping[str, Any]]
) -> dict[Any, Any]:
    kept = {}
    for key, value in assignments.items():
        if _key_name(key) != TENANT_KEY:
            kept[key] = value
        elif not _is_proposed_tenant(value, table):
            # The row updated is this tenant's already: the only acceptable tenant_id is its own.
            _check_tenant_value(value, tenant_id, rows, "the SET of an upsert")
    return kept


def other_entity_criteria(statement: Any, tenant_id: str) -> list[ColumnElement[bool]]:
    """``tenant_id = :tenant`` for every scoped entity an UPDATE or DELETE names besides its target.

    An entity named in the WHERE, SET or RETURNING (not inside a subquery) becomes
    ``UPDATE ... FROM`` / ``DELETE ... USING``, and the ORM filters the target alone.
    """
    target = statement.table._annotations.get("parententity")
    expressions = [*statement._where_criteria, *getattr(statement, "_returning", ())]
    values = getattr(statement, "_values", None) or {}
    expressions += [value for value in values.values() if isinstance(value, ClauseElement)]
    seen: set[Any] = set()
    criteria: list[ColumnElement[bool]] = []
    for expression in expressions:
        for element in surface_expressions(expression):
            entity = getattr(element, "_annotations", {}).get("parententity")
            if entity is None or entity is target or entity in seen:
                continue
            seen.add(entity)
            facts = scoped_facts(entity.mapper)
            if facts is None:
                continue
            if entity.is_aliased_class:
                if facts.joins_to_tenant_table:
                    raise CrossTenantAccess(
                        f"an aliased {facts.mapper.class_.__name__} (a joined-inheritance "
                        "subclass) in the WHERE of an UPDATE or DELETE cannot be confined: "
                        "select the keys in a subquery instead"
                    )
                criteria.append(entity.entity.tenant_id == tenant_id)
            else:
                criteria.append(facts.tenant_column == tenant_id)
                criteria.extend(facts.joins_to_tenant_table)
    return criteria


def confine_update_or_delete(
    statement: Any, parameters: Any, facts: ScopedFacts, tenant_id: str, *, dialect: str
) -> Any:
    """Check tenant_id written by an ORM UPDATE; join a joined subclass to its tenant table."""
    if statement.is_update:
        rows = parameter_rows(parameters)
        check_parameters(rows, tenant_id)
        check_statement_values(statement, rows, tenant_id)
    joins = facts.joins_to_tenant_table
    if _names_ancestor_tables(statement, facts.mapper):
        # A column of a base table in the SET, WHERE or RETURNING makes the statement span the
        # hierarchy's tables, and the ORM names them without joining them (MySQL: UPDATE cars,
        # vehicles ... WHERE cars.tenant_id = :tenant): every tenant's base rows would match.
        # Joined up to the root, each base row is the tenant's own subclass row.
        joins = facts.joins_to_root
    if not joins:
        return statement
    if statement.is_delete and dialect == "sqlite":
        raise CrossTenantAccess(
            f"delete({facts.mapper.class_.__name__}) cannot be confined on SQLite: tenant_id "
            f"lives in {facts.tenant_column.table.name}, and SQLite has no DELETE with a join; "
            f"delete through the base class (delete({facts.tenant_mapper.class_.__name__})"
            ".where(...)) or session.delete() each object"
        )
    # The ORM puts the tenant condition on the base table without joining it to the subclass
    # table, which would match every tenant's subclass rows.
    hint = "is_delete_using" if statement.is_delete else "is_update_from"
    return statement.where(*joins).execution_options(**{hint: True})


def _names_ancestor_tables(statement: Any, mapper: Mapper[Any]) -> bool:
    """Whether an UPDATE or DELETE of ``mapper`` names a column of an ancestor's table."""
    if mapper.inherits is None:
        return False
    ancestors = {m.local_table for m in mapper.iterate_to_root()} - {mapper.local_table}
    expressions: list[Any] = [*statement._where_criteria, *getattr(statement, "_returning", ())]
    for key, value in (getattr(statement, "_values", None) or {}).items():
        expressions.append(value)
        if isinstance(key, str):
            prop = mapper.attrs.get(key)
            expressions.extend(getattr(prop, "columns", ()))
        else:
            expressions.append(key)
    for expression in expressions:
        if not isinstance(expression, ClauseElement):
            continue
        for element in visitors.iterate(expression):
            if getattr(element, "table", None) in ancestors:
                return True
    return False


def confine_column_load(statement: Any, facts: ScopedFacts, tenant_id: str) -> Any:
    """Add the tenant to a refresh or an expired-attribute load, which select by key alone."""
    confine = (facts.tenant_column == tenant_id, *facts.joins_to_root)
    if isinstance(statement, FromStatement):
        # Loading only a joined subclass's own columns selects from that table alone.
        inner = statement.element
        if not isinstance(inner, Select):
            raise CrossTenantAccess(
                f"cannot confine a load of {facts.mapper.class_.__name__} attributes from "
                f"{type(inner).__name__}: load the object with select() instead"
            )
        confined = statement._generate()
        confined.element = inner.where(*confine)
        return confined
    return statement.where(*confine)


def verify_flush(session: Session, objects: Iterable[Any], tenant_id: str) -> None:
    """Refuse to flush an UPDATE or DELETE of a row that is not the session tenant's.

    The flush matches rows by primary key alone, and an object's primary key and tenant_id are
    whatever its in-memory state says (``make_transient_to_detached``, ``merge(load=False)``,
    ``set_committed_value`` forge both), so the stored tenant of each row is read back first.
    """
    wanted: dict[Mapper[Any], dict[tuple[Any, ...], Any]] = {}
    for obj in objects:
        state = inspect(obj)
        if state.key is None:
            continue
        facts = scoped_facts(state.mapper)
        if facts is None:
            continue
        mapper = state.mapper
        key = tuple(
            mapper._get_committed_state_attr_by_column(state, state.dict, column)
            for column in mapper.primary_key
        )
        wanted.setdefault(facts.tenant_mapper, {})[key] = obj
    if not wanted:
        return
    with session.no_autoflush:
        for tenant_mapper, keys in wanted.items():
            _verify_keys(session, tenant_mapper, keys, tenant_id)


def verify_mappings(
    session: Session, mapper: Mapper[Any], mappings: Sequence[Mapping[str, Any]], tenant_id: str
) -> None:
    """Refuse ``bulk_update_mappings`` rows whose primary key is not a row of the tenant."""
    facts = scoped_facts(mapper)
    if facts is None or not mappings:
        return
    keys = [mapper.get_property_by_column(column).key for column in mapper.primary_key]
    # A missing key part is SQLAlchemy's error to report; here it matches no row of the tenant.
    wanted = {tuple(mapping.get(key) for key in keys): mapping for mapping in mappings}
    with session.no_autoflush:
        _verify_keys(session, facts.tenant_mapper, wanted, tenant_id)


def _verify_keys(
    session: Session, mapper: Mapper[Any], keys: Mapping[tuple[Any, ...], Any], tenant_id: str
) -> None:
    columns = list(mapper.primary_key)
    tenant_column = mapper.local_table.c[TENANT_KEY]
    facts = scoped_facts(mapper)
    assert facts is not None  # the mapper holding tenant_id is TenantScoped
    pending = list(keys)
    found: set[tuple[Any, ...]] = set()
    for start in range(0, len(pending), _VERIFY_CHUNK):
        chunk = pending[start : start + _VERIFY_CHUNK]
        if len(columns) == 1:
            matches = columns[0].in_([key[0] for key in chunk])
        else:
            matches = tuple_(*columns).in_(chunk)
        result = session.execute(
            select(*columns).where(matches, tenant_column == tenant_id, *facts.joins_to_root)
        )
        found.update(tuple(row) for row in result)
    missing = [key for key in pending if key not in found]
    if missing:
        raise CrossTenantAccess(
            f"cannot write a {mapper.class_.__name__} with primary key {missing[0]!r}: no row of "
            "the current tenant has it (an object or mapping built with another tenant's primary "
            "key, e.g. by make_transient_to_detached(), merge(load=False) or "
            "bulk_update_mappings()); load the row in your own tenant "
            "first (session.get()) and change that"
        )

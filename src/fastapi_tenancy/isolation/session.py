"""⑤ The tenant session: `TenantSession` and every listener a tenant session runs.

Each strategy opens its sessions with ``sync_session_class=TenantSession`` and puts what binds
them in ``session.info``: the tenant's id (`TENANT_INFO_KEY`, always), the schema's search path
(`SEARCH_PATH_INFO_KEY`, schema isolation on PostgreSQL) and whether row-level security reads the
tenant (`RLS_INFO_KEY`). The listeners, all registered here:

* ``do_orm_execute`` adds ``tenant_id = :tenant`` to every ORM SELECT, UPDATE and DELETE (also
  relationship and lazy loads, refreshes, and SELECTs inside an INSERT) and stamps every ORM
  INSERT; what the criteria cannot reach (written tenant_id values, upserts, joined-inheritance
  UPDATE/DELETE) is checked or rewritten by `fastapi_tenancy.isolation.confine`, and foreign-key
  values by `fastapi_tenancy.isolation.references`;
* ``before_flush`` stamps new objects and refuses to flush an object of another tenant, reading
  back the stored tenant of every row a flush is about to UPDATE or DELETE, then checks the
  foreign keys the flush writes;
* ``after_begin`` binds the transaction on PostgreSQL: ``set_config(..., true)`` of the search
  path and/or the row-level security tenant, transaction-local, at every BEGIN (after a
  ``commit()`` in the same handler too), so no pooled connection ever carries a tenant. On asyncpg
  the binding rides in the same message as the BEGIN (`fastapi_tenancy.pgwire`): no round trip
  of its own. A session in AUTOCOMMIT is refused there first
  (`fastapi_tenancy.isolation.autocommit`).

The row binding lives on the session, not on a connection, so it holds across ``commit()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
    class_mapper,
    with_loader_criteria,
)
from sqlalchemy.orm.util import LoaderCriteriaOption

from fastapi_tenancy.exceptions import CrossTenantAccess, TenantContextMissing
from fastapi_tenancy.isolation.autocommit import AUTOCOMMIT_FIX, in_autocommit
from fastapi_tenancy.isolation.confine import (
    check_parameters,
    confine_column_load,
    confine_insert,
    confine_update_or_delete,
    other_entity_criteria,
    refuse_leaky_bases,
    scoped_facts,
    verify_flush,
    verify_mappings,
)
from fastapi_tenancy.isolation.references import (
    check_flushed_references,
    check_statement_references,
)
from fastapi_tenancy.isolation.rls import TENANT_SETTING
from fastapi_tenancy.isolation.scoped import TenantScoped
from fastapi_tenancy.pgwire import bind_transaction, reset_at_end

__all__ = [
    "RLS_INFO_KEY",
    "SEARCH_PATH_INFO_KEY",
    "TENANT_INFO_KEY",
    "TenantSession",
    "session_tenant_id",
]

TENANT_INFO_KEY = "fastapi_tenancy.tenant_id"
RLS_INFO_KEY = "fastapi_tenancy.row_level_security"
SEARCH_PATH_INFO_KEY = "fastapi_tenancy.search_path"


class TenantSession(Session):
    """The sync session class behind every tenant-bound `AsyncSession`; see the module docstring.

    The legacy bulk methods (``bulk_save_objects``, ``bulk_insert_mappings``,
    ``bulk_update_mappings``) run neither ORM event, so they stamp and verify here.
    """

    def _execute_internal(self, *args: Any, **kwargs: Any) -> Any:
        # The first statement of a transaction on a pooled connection that died after the
        # pre-ping's look (a backend killed a moment before) fails with the connection
        # invalidated. Nothing of the transaction ran, or the server rolled it back, and no
        # pending change of this session was flushed: running the statement once more on a new
        # connection repeats nothing. Anything later in a transaction is never retried.
        transaction = self._transaction
        retry = (
            (transaction is None or not transaction._connections)
            and kwargs.get("_parent_execute_state") is None
            and self._is_clean()
        )
        try:
            return super()._execute_internal(*args, **kwargs)
        except DBAPIError as exc:
            if not (retry and exc.connection_invalidated):
                raise
        self.rollback()
        return super()._execute_internal(*args, **kwargs)

    def commit(self) -> None:
        self._reset_at_end()
        super().commit()

    def close(self) -> None:
        self._reset_at_end()
        super().close()

    def _reset_at_end(self) -> None:
        # commit() and close() end the outermost transaction and hand the connections this session
        # checked out back to the pool: their COMMIT or ROLLBACK can carry the pool's session
        # reset (fastapi_tenancy.pgwire), one round trip instead of two.
        transaction = self._transaction
        if transaction is not None:
            for connection, _trans, _commit, autoclose in transaction._connections.values():
                if autoclose:
                    reset_at_end(connection)

    def bulk_save_objects(
        self,
        objects: Iterable[object],
        return_defaults: bool = False,
        update_changed_only: bool = True,
        preserve_order: bool = True,
    ) -> None:
        objects = list(objects)
        scoped = [obj for obj in objects if isinstance(obj, TenantScoped)]
        if scoped:
            tenant_id = session_tenant_id(self)
            for obj in scoped:
                if inspect(obj).key is None and obj.tenant_id is None:
                    obj.tenant_id = tenant_id
                elif obj.tenant_id != tenant_id:
                    raise CrossTenantAccess(f"cannot save a {type(obj).__name__} of another tenant")
            verify_flush(self, scoped, tenant_id)
        super().bulk_save_objects(objects, return_defaults, update_changed_only, preserve_order)

    def bulk_insert_mappings(
        self,
        mapper: Any,
        mappings: Iterable[dict[str, Any]],
        return_defaults: bool = False,
        render_nulls: bool = False,
    ) -> None:
        mappings = list(mappings)
        if scoped_facts(class_mapper(mapper) if isinstance(mapper, type) else mapper):
            tenant_id = session_tenant_id(self)
            check_parameters(mappings, tenant_id)
            for mapping in mappings:
                mapping["tenant_id"] = tenant_id
        super().bulk_insert_mappings(mapper, mappings, return_defaults, render_nulls)

    def bulk_update_mappings(self, mapper: Any, mappings: Iterable[dict[str, Any]]) -> None:
        mappings = list(mappings)
        resolved = class_mapper(mapper) if isinstance(mapper, type) else mapper
        if scoped_facts(resolved):
            tenant_id = session_tenant_id(self)
            check_parameters(mappings, tenant_id)
            if any(column.key == "tenant_id" for column in resolved.primary_key):
                # A (tenant_id, id) key: the session's tenant is the only one it may name.
                for mapping in mappings:
                    mapping.setdefault("tenant_id", tenant_id)
            verify_mappings(self, resolved, mappings, tenant_id)
        super().bulk_update_mappings(mapper, mappings)


def session_tenant_id(session: Session) -> str:
    """The id of the tenant ``session`` is bound to; raises if it is bound to none."""
    tenant_id = session.info.get(TENANT_INFO_KEY)
    if not isinstance(tenant_id, str) or not tenant_id:
        raise TenantContextMissing("this session is not bound to a tenant")
    return tenant_id


def _confine_statement(state: ORMExecuteState) -> None:
    statement: Any = state.statement
    if state.is_select:
        tenant_id = session_tenant_id(state.session)
        refuse_leaky_bases(statement)
        statement = statement.options(_SELECT_CRITERIA)
        state.parameters = _with_tenant_parameter(state.parameters, tenant_id)
        # Loader criteria skip refreshes and expired-attribute loads, which select by primary
        # key alone: an object forged with another tenant's key must load nothing. (A dict
        # lookup, not ``state.is_column_load``, which costs more on every plain select.)
        load = state.local_execution_options.get("_sa_orm_load_options")
        if load is not None and load._refresh_state is not None:
            facts = scoped_facts(load._refresh_state.mapper)
            if facts is not None:
                statement = confine_column_load(statement, facts, tenant_id)
        state.statement = statement
        return
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    tenant_id = session_tenant_id(state.session)
    refuse_leaky_bases(statement)
    mapper = state.bind_mapper
    facts = scoped_facts(mapper) if mapper is not None else None
    if state.is_insert:
        if facts is not None:
            statement, state.parameters = confine_insert(
                statement, state.parameters, facts, tenant_id
            )
        # The option reaches SELECTs inside the INSERT: from_select(), subqueries in values.
        state.statement = statement.options(_tenant_criteria(tenant_id))
        return
    others = other_entity_criteria(statement, tenant_id)
    if others:
        statement = statement.where(*others)
    if facts is not None:
        dialect = state.session.get_bind(mapper=mapper).dialect.name
        statement = confine_update_or_delete(
            statement, state.parameters, facts, tenant_id, dialect=dialect
        )
    if state.is_update and isinstance(state.parameters, list):
        # Bulk UPDATE by primary key ignores loader criteria, so the tenant goes in the WHERE.
        if facts is not None:
            # Where the key lives in an unscoped base table, the WHERE below cannot confine that
            # table's UPDATE: the keys are proved the tenant's first.
            tenant_table = facts.tenant_column.table
            if any(column.table is not tenant_table for column in facts.mapper.primary_key):
                verify_mappings(state.session, facts.mapper, state.parameters, tenant_id)
            statement = statement.where(facts.mapper.class_.tenant_id == tenant_id)
            state.statement = statement.execution_options(synchronize_session=None)
        return
    state.statement = statement.options(_tenant_criteria(tenant_id))


# The SELECT path's criteria name the tenant through a bound parameter that every execution
# supplies (`_with_tenant_parameter`): one option for all tenants, whose lambda closes over
# nothing. A lambda closing over the tenant's id has its closure read again at every execution
# to extract the value, which costs more than the rest of the confinement together. A statement
# that reached the database without the parameter would fail ("a value is required"), never
# match another tenant.
TENANT_PARAMETER = "fastapi_tenancy_tenant_id"
_SELECT_CRITERIA = with_loader_criteria(
    TenantScoped,
    # The name written out: SQLAlchemy's lambda analysis would track a global as a variable.
    lambda cls: cls.tenant_id == bindparam("fastapi_tenancy_tenant_id"),
    include_aliases=True,
)


def _with_tenant_parameter(parameters: Any, tenant_id: str) -> Any:
    """The execution's parameters with the tenant's id for `_SELECT_CRITERIA`, overriding any."""
    if isinstance(parameters, list):
        # A SELECT runs once; a list here is SQLAlchemy's to refuse. Each entry gets the tenant.
        return [{**row, TENANT_PARAMETER: tenant_id} for row in parameters]
    if parameters:
        return {**parameters, TENANT_PARAMETER: tenant_id}
    return {TENANT_PARAMETER: tenant_id}


@lru_cache(maxsize=4096)
def _tenant_criteria(tenant_id: str) -> LoaderCriteriaOption:
    # Building the option analyses the lambda's closure on every call; the option is immutable,
    # so one per tenant serves every statement.
    return with_loader_criteria(
        TenantScoped,
        lambda cls: cls.tenant_id == tenant_id,
        include_aliases=True,
    )


def _guard_flush(
    session: Session, tenant_id: str, pending: list[Any], changed: list[Any], removed: list[Any]
) -> None:
    for obj in pending:
        if obj.tenant_id is None:
            obj.tenant_id = tenant_id
        elif obj.tenant_id != tenant_id:
            raise CrossTenantAccess(f"cannot add a {type(obj).__name__} of another tenant")
    for obj in changed + removed:
        # Only a loaded value is compared: loading an expired one is confined to this tenant and
        # finds nothing for a forged object. verify_flush reads the stored tenant of each row.
        loaded = inspect(obj).dict.get("tenant_id")
        if loaded is not None and loaded != tenant_id:
            raise CrossTenantAccess(f"cannot write a {type(obj).__name__} of another tenant")
    written = [obj for obj in changed if session.is_modified(obj, include_collections=False)]
    verify_flush(session, written + removed, tenant_id)


@event.listens_for(TenantSession, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    _confine_statement(state)
    if state.is_insert or state.is_update:
        check_statement_references(state, session_tenant_id(state.session))


@event.listens_for(TenantSession, "before_flush")
def _on_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    pending = [obj for obj in session.new if isinstance(obj, TenantScoped)]
    changed = [obj for obj in session.dirty if isinstance(obj, TenantScoped)]
    removed = [obj for obj in session.deleted if isinstance(obj, TenantScoped)]
    if not (pending or changed or removed):
        return
    tenant_id = session_tenant_id(session)
    _guard_flush(session, tenant_id, pending, changed, removed)
    check_flushed_references(session, tenant_id)


@event.listens_for(TenantSession, "after_begin")
def _bind_transaction(
    session: Session, _transaction: SessionTransaction, connection: Connection
) -> None:
    search_path = session.info.get(SEARCH_PATH_INFO_KEY)
    rls = session.info.get(RLS_INFO_KEY)
    if search_path is None and not rls:
        return
    if in_autocommit(connection):
        binding = (
            "schema isolation's search_path"
            if search_path is not None
            else "row-level security's tenant setting"
        )
        raise CrossTenantAccess(
            f"a tenant session cannot run in AUTOCOMMIT: {binding} is bound per transaction and "
            f"would end with the first statement (fix: {AUTOCOMMIT_FIX})"
        )
    settings: dict[str, str] = {}
    if search_path is not None:
        settings["search_path"] = search_path
    if rls:
        settings[TENANT_SETTING] = session_tenant_id(session)
    # Transaction-local (is_local=true): gone at COMMIT/ROLLBACK, so the next BEGIN sets it again
    # and a pooled connection never keeps it.
    bind_transaction(connection, settings)

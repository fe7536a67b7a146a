"""⑤ Row isolation: tenants share tables; every ORM statement is confined to one ``tenant_id``.

A `TenantSession` carries its tenant's id in ``session.info``. Two session events enforce it:

* ``do_orm_execute`` adds ``tenant_id = :tenant`` to every ORM SELECT, UPDATE and DELETE (also
  relationship and lazy loads, refreshes, and SELECTs inside an INSERT) and stamps every ORM
  INSERT; what the criteria cannot reach (written tenant_id values, upserts, joined-inheritance
  UPDATE/DELETE) is checked or rewritten by `fastapi_tenancy.isolation.confine`;
* ``before_flush`` stamps new objects and refuses to flush an object of another tenant, reading
  back the stored tenant of every row a flush is about to UPDATE or DELETE.

The binding lives on the session, not on a connection, so it holds across ``commit()`` and no
pooled connection ever carries a tenant. Raw SQL (``text()``, ``session.connection()``) and Core
statements on ``Table`` objects are not filtered; PostgreSQL row-level security covers those
(``row_level_security``, `fastapi_tenancy.isolation.rls`): a third event, ``after_begin``, sets the
session's tenant transaction-locally at every BEGIN, for the policies to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import delete, event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
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
from fastapi_tenancy.isolation.rls import BIND_TENANT, verify_row_level_security
from fastapi_tenancy.isolation.scoped import TenantScoped
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.models import Tenant

__all__ = [
    "RLS_INFO_KEY",
    "TENANT_INFO_KEY",
    "RowIsolation",
    "TenantSession",
    "session_tenant_id",
]

TENANT_INFO_KEY = "fastapi_tenancy.tenant_id"
RLS_INFO_KEY = "fastapi_tenancy.row_level_security"


class TenantSession(Session):
    """The sync session class behind every tenant-bound `AsyncSession`; see the module docstring.

    The legacy bulk methods (``bulk_save_objects``, ``bulk_insert_mappings``,
    ``bulk_update_mappings``) run neither ORM event, so they stamp and verify here.
    """

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


@event.listens_for(TenantSession, "do_orm_execute")
def _confine_statement(state: ORMExecuteState) -> None:
    statement: Any = state.statement
    if state.is_select:
        tenant_id = session_tenant_id(state.session)
        refuse_leaky_bases(statement)
        statement = statement.options(_tenant_criteria(tenant_id))
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


@lru_cache(maxsize=4096)
def _tenant_criteria(tenant_id: str) -> LoaderCriteriaOption:
    # Building the option analyses the lambda's closure on every call; the option is immutable,
    # so one per tenant serves every statement.
    return with_loader_criteria(
        TenantScoped,
        lambda cls: cls.tenant_id == tenant_id,
        include_aliases=True,
    )


@event.listens_for(TenantSession, "after_begin")
def _bind_rls_tenant(
    session: Session, _transaction: SessionTransaction, connection: Connection
) -> None:
    if session.info.get(RLS_INFO_KEY):
        # Transaction-local (is_local=true): gone at COMMIT/ROLLBACK, so the next BEGIN (after a
        # commit() in the same handler too) sets it again and a pooled connection never keeps it.
        connection.execute(BIND_TENANT, {"tenant_id": session_tenant_id(session)})


@event.listens_for(TenantSession, "before_flush")
def _guard_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    pending = [obj for obj in session.new if isinstance(obj, TenantScoped)]
    changed = [obj for obj in session.dirty if isinstance(obj, TenantScoped)]
    removed = [obj for obj in session.deleted if isinstance(obj, TenantScoped)]
    if not (pending or changed or removed):
        return
    tenant_id = session_tenant_id(session)
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


_SHARED_TABLES_LOCK = "fastapi_tenancy.shared_tables"
_PG_LOCK = text(f"SELECT pg_advisory_xact_lock(hashtext('{_SHARED_TABLES_LOCK}'))")
_MYSQL_LOCK = text(f"SELECT GET_LOCK('{_SHARED_TABLES_LOCK}', 60)")
_MYSQL_UNLOCK = text(f"SELECT RELEASE_LOCK('{_SHARED_TABLES_LOCK}')")


class RowIsolation:
    """All tenants in the central database's shared tables, kept apart by ``tenant_id``.

    Example::

        isolation = RowIsolation(engine, TenantTables(Base.metadata))
        async with isolation.session(tenant) as session:
            items = (await session.scalars(select(Item))).all()   # this tenant's items only
    """

    def __init__(
        self, engine: AsyncEngine, tables: TenantTables, *, row_level_security: bool = False
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._rls = row_level_security
        self._sessions = async_sessionmaker(
            engine, sync_session_class=TenantSession, expire_on_commit=False
        )
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()

    @property
    def row_level_security(self) -> bool:
        """Whether sessions bind their tenant for PostgreSQL's row-level security policies."""
        return self._rls

    async def start(self) -> None:
        """With row-level security, refuse to start unless PostgreSQL would enforce it.

        Sessions use the central engine, which the runtime owns: nothing else to open.
        """
        if self._rls:
            async with self._engine.connect() as conn:
                tables = self._tables.scoped_tables_children_first()
                await conn.run_sync(verify_row_level_security, tables)

    async def close(self) -> None:
        """Nothing to release: the central engine is disposed by its owner."""

    def assign_storage(self, tenant: Tenant) -> Tenant:
        """Row isolation keeps every tenant in the shared tables: nothing to assign."""
        return tenant

    @asynccontextmanager
    async def session(self, tenant: Tenant) -> AsyncIterator[AsyncSession]:
        info: dict[str, Any] = {TENANT_INFO_KEY: tenant.id}
        if self._rls:
            info[RLS_INFO_KEY] = True
        async with self._sessions(info=info) as session:
            yield session

    async def provision(self, tenant: Tenant) -> None:
        # Shared tables are created once per process; each tenant needs no storage of its own.
        # Concurrent first tenants would race on CREATE TABLE (PostgreSQL answers the loser with
        # a unique violation in pg_type, MariaDB with "table exists"), so one creator runs at a
        # time: in this process by the lock, across processes by a server lock (SQLite, the
        # embedded default, serves one process).
        if self._tables_ready:
            return
        async with self._tables_lock:
            if self._tables_ready:
                return
            async with self._engine.begin() as conn:
                dialect = conn.dialect.name
                if dialect == "postgresql":
                    await conn.execute(_PG_LOCK)  # released with the transaction
                elif dialect in ("mysql", "mariadb"):
                    await conn.execute(_MYSQL_LOCK)
                try:
                    for metadata in self._tables.metadatas():
                        await conn.run_sync(metadata.create_all, checkfirst=True)
                finally:
                    if dialect in ("mysql", "mariadb"):
                        await conn.execute(_MYSQL_UNLOCK)
            self._tables_ready = True

    async def purge(self, tenant: Tenant) -> None:
        async with self._engine.begin() as conn:
            if self._rls:
                # The policies hide every row from a transaction that names no tenant.
                await conn.execute(BIND_TENANT, {"tenant_id": tenant.id})
            # Every tenant_id table in the database, Alembic-owned ones included.
            for table in await conn.run_sync(self._tables.existing_scoped_tables):
                await conn.execute(delete(table).where(table.c.tenant_id == tenant.id))

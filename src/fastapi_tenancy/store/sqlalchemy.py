"""`SQLAlchemyTenantStore`: tenant records in the ``tenancy_tenants`` table of any SQL database.

Works on PostgreSQL (asyncpg), MySQL/MariaDB (aiomysql) and SQLite (aiosqlite). Driver errors stop
at this module: an unreachable database becomes `ServiceUnavailable`, a taken id or identifier
becomes `TenantAlreadyExists`.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeDecorator

from fastapi_tenancy._secrets import redact_url
from fastapi_tenancy.domains import Domain, DomainAlreadyExists
from fastapi_tenancy.exceptions import ServiceUnavailable, TenantAlreadyExists, TenantNotFound
from fastapi_tenancy.isolation.unavailable import describe, is_deadlock, is_unavailable
from fastapi_tenancy.models import Tenant, TenantStatus, later_than

__all__ = ["SQLAlchemyTenantStore", "domains_table", "tenants_metadata", "tenants_table"]

# Tries at creating the tenants table when other processes race to create it too.
CREATE_ATTEMPTS = 5
# Tries at a provisioning claim the server rolled back to break a deadlock with another claim.
_CLAIM_ATTEMPTS = 5
# The lock new tenants are placed on a server under (tenant ids are hex: never this key), and
# the longest wait for it: placing is one count and one insert.
PLACEMENT_LOCK_KEY = "placement"
PLACEMENT_WAIT = 30.0


def _utc(value: datetime) -> datetime:
    # MySQL and SQLite store wall-clock times without an offset; every stored time is UTC, and a
    # naive value is read as UTC too.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC with microseconds and always read back as an aware UTC value."""

    impl = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _utc(value)
        # Only PostgreSQL has a column type that keeps the offset; the others get UTC wall time.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)


tenants_metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)

tenants_table = Table(
    "tenancy_tenants",
    tenants_metadata,
    Column("id", String(64), primary_key=True),
    Column("identifier", String(63), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
    Column("storage_name", String(64), nullable=True, unique=True),
    Column("database_url", Text, nullable=True),
    Column("provisioning_attempts", Integer, nullable=False, server_default="0"),
    # The database server the tenant was placed on (`fastapi_tenancy.isolation.placement`);
    # NULL: the default server.
    Column("server", String(64), nullable=True, index=True),
    # The server default may be latin1, which cannot hold every tenant name.
    mysql_charset="utf8mb4",
)

# Custom domains (`fastapi_tenancy.domains`): each normalised host name belongs to one tenant.
domains_table = Table(
    "tenancy_domains",
    tenants_metadata,
    Column("host", String(253), primary_key=True),
    Column(
        "tenant_id",
        String(64),
        ForeignKey("tenancy_tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    mysql_charset="utf8mb4",
)

_SELECT_BY_ID = select(tenants_table).where(tenants_table.c.id == bindparam("tenant_id"))
_SELECT_BY_IDENTIFIER = select(tenants_table).where(
    tenants_table.c.identifier == bindparam("identifier")
)
_SELECT_BY_DOMAIN = (
    select(tenants_table)
    .join(domains_table, domains_table.c.tenant_id == tenants_table.c.id)
    .where(domains_table.c.host == bindparam("host"))
)


class SQLAlchemyTenantStore:
    """A `TenantStore` on an `AsyncEngine`; each call is one short transaction.

    The engine belongs to the caller: `close` leaves it open, dispose it yourself.

    Example::

        engine = create_engine("sqlite+aiosqlite:///./tenancy.db")
        store = SQLAlchemyTenantStore(engine)
        await store.initialize()
        tenant = await store.add(Tenant(identifier="acme", name="Acme"))
        assert await store.get_by_identifier("acme") == tenant
    """

    def __init__(
        self, engine: AsyncEngine, *, central_migrations: Literal["auto", "check"] = "auto"
    ) -> None:
        self._engine = engine
        self._central_migrations = central_migrations

    async def initialize(self) -> None:
        """Bring the central tables to this release's revision; safe to call repeatedly and
        concurrently (`fastapi_tenancy.migrations.central`).

        With ``central_migrations="check"`` nothing is changed: a database that is not at the
        revision raises `ConfigurationError`, saying to run ``fastapi-tenancy migrate central``.
        """
        with self._translate_errors():
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    await self._create_tables()
                    return
                except DBAPIError as exc:
                    if (is_unavailable(exc) and not _sqlite_busy(exc)) or (
                        attempt == CREATE_ATTEMPTS - 1
                    ):
                        raise
                    # Another process was creating or upgrading the tables at the same moment
                    # (the central migration lock serialises them; a later check sees its
                    # commit). A real failure repeats and propagates. On SQLite the loser of
                    # that race may get SQLITE_BUSY at once (its read lock cannot become a
                    # write lock while the other writes): the same race, not an outage.
                    await asyncio.sleep(0.05 * (attempt + 1))

    async def close(self) -> None:
        """Nothing to release: the engine was passed in and stays open."""

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with ``tenant_id``, or ``None``."""
        return await self._select_one(_SELECT_BY_ID, {"tenant_id": tenant_id})

    async def get_by_identifier(self, identifier: str) -> Tenant | None:
        """The tenant named ``identifier``, or ``None``: one indexed SELECT."""
        return await self._select_one(_SELECT_BY_IDENTIFIER, {"identifier": identifier})

    async def add(self, tenant: Tenant) -> Tenant:
        """Insert ``tenant``; raises `TenantAlreadyExists` if its id or identifier is taken."""
        stored = _in_utc(tenant)
        with self._translate_errors():
            async with self._engine.begin() as conn:
                await conn.execute(tenants_table.insert().values(_row_values(stored)))
        return stored

    @property
    def engine(self) -> AsyncEngine:
        """The engine of the central database the records are kept in."""
        return self._engine

    async def add_with_storage(self, tenant: Tenant, script: str) -> bool:
        """Insert ``tenant`` and run ``script`` (its storage's DDL, in this database) at once.

        PostgreSQL on asyncpg: the insert (values written as literals) and the script go as one
        simple-protocol message, which the server runs as one implicit transaction: one round
        trip and one commit, and the record and the storage appear together or not at all.
        ``False`` when this store cannot (another driver, a value a query text cannot carry):
        nothing was sent. Any error of the server propagates with nothing changed.
        """
        from fastapi_tenancy.isolation.templates import run_script
        from fastapi_tenancy.pgwire import string_literal

        if self._engine.dialect.driver != "asyncpg":
            return False
        values = _row_values(_in_utc(tenant))
        try:
            literals = [_literal(value, string_literal) for value in values.values()]
        except (TypeError, ValueError):  # a NUL character, a value JSON cannot hold
            return False
        insert = (
            f"INSERT INTO {tenants_table.name} ({', '.join(values)}) VALUES ({', '.join(literals)})"
        )
        async with self._engine.connect() as conn:
            # The insert comes first: the central table is found on the connection's own
            # search path before the script sets any, and a taken identifier stops the message
            # before any DDL runs.
            await run_script(conn, f"{insert};\n{script}")
        return True

    async def add_placed(
        self, tenant: Tenant, choose: Callable[[Mapping[str | None, int]], str]
    ) -> Tenant:
        """Insert ``tenant`` on the server ``choose`` picks from the tenants per server now.

        Counting and inserting share one transaction under the placement lock (an advisory lock
        on PostgreSQL, a named lock on MariaDB/MySQL, the write lock on SQLite), so concurrent
        creators, in any processes, see each other's tenants and never overfill a server.
        """
        # The migration runner's lock serves here too: the same semantics on every backend.
        from fastapi_tenancy.migrations.errors import MigrationLockTimeout
        from fastapi_tenancy.migrations.locks import migration_transaction

        t = tenants_table
        counting = select(t.c.server, func.count()).group_by(t.c.server)
        try:
            with self._translate_errors():
                async with (
                    self._engine.connect() as conn,
                    migration_transaction(conn, PLACEMENT_LOCK_KEY, wait_seconds=PLACEMENT_WAIT),
                ):
                    rows = (await conn.execute(counting)).all()
                    counts = {server: int(n) for server, n in rows}
                    stored = _in_utc(tenant.model_copy(update={"server": choose(counts)}))
                    await conn.execute(t.insert().values(_row_values(stored)))
        except MigrationLockTimeout:
            raise ServiceUnavailable(
                f"another process held the tenant placement lock for over {PLACEMENT_WAIT:g}s"
            ) from None
        return stored

    async def count_by_server(self) -> dict[str | None, int]:
        """How many tenant records (in any status) each server holds; ``None``: the default."""
        t = tenants_table
        counting = select(t.c.server, func.count()).group_by(t.c.server)
        with self._translate_errors():
            async with self._engine.begin() as conn:
                rows = (await conn.execute(counting)).all()
        return {server: int(n) for server, n in rows}

    async def update(self, tenant: Tenant) -> Tenant:
        """Replace the record with the same id, stamping ``updated_at``; returns what was stored."""
        stored = await self._write(tenant, later_than(tenant.updated_at))
        if stored is None:
            raise TenantNotFound(f"no tenant with id {tenant.id!r}")
        return stored

    async def update_if_unchanged(self, tenant: Tenant, *, expected: Tenant) -> Tenant | None:
        """Write ``tenant`` only if the record still has ``expected``'s status and ``updated_at``.

        One conditional UPDATE: of two writers that read the same record, exactly one wins.
        """
        t = tenants_table
        return await self._write(
            tenant,
            later_than(expected.updated_at),
            t.c.status == expected.status.value,
            t.c.updated_at == _utc(expected.updated_at),
        )

    async def _write(self, tenant: Tenant, updated_at: datetime, *conditions: Any) -> Tenant | None:
        stored = _in_utc(tenant.model_copy(update={"updated_at": updated_at}))
        values = _row_values(stored)
        del values["id"]
        statement = (
            update(tenants_table).where(tenants_table.c.id == stored.id, *conditions).values(values)
        )
        with self._translate_errors():
            async with self._engine.begin() as conn:
                result = await conn.execute(statement)
        # SQLAlchemy's MySQL dialects count matched rows, not changed ones, so 0 means "no match".
        return stored if result.rowcount == 1 else None

    async def delete(self, tenant_id: str) -> None:
        """Remove the record (and its domains) for good; no error if it is already gone."""
        statement = delete(tenants_table).where(tenants_table.c.id == tenant_id)
        with self._translate_errors():
            async with self._engine.begin() as conn:
                # Explicitly, not by the foreign key's cascade: SQLite enforces foreign keys only
                # when asked to per connection.
                await conn.execute(
                    delete(domains_table).where(domains_table.c.tenant_id == tenant_id)
                )
                await conn.execute(statement)

    # Custom domains (`fastapi_tenancy.store.base.DomainStore`).

    async def add_domain(self, domain: Domain) -> Domain:
        """Give ``domain.host`` to its tenant; raises `DomainAlreadyExists` if it has an owner."""
        stored = Domain(domain.host, domain.tenant_id, _utc(domain.created_at))
        values = {
            "host": stored.host,
            "tenant_id": stored.tenant_id,
            "created_at": stored.created_at,
        }
        try:
            with self._translate_errors():
                async with self._engine.begin() as conn:
                    await conn.execute(domains_table.insert().values(values))
        except TenantAlreadyExists:
            raise DomainAlreadyExists(
                f"domain {domain.host!r} already belongs to a tenant"
            ) from None
        return stored

    async def remove_domain(self, host: str) -> Domain | None:
        """Take ``host`` from its tenant; returns what was removed, ``None`` if nobody owned it."""
        d = domains_table
        with self._translate_errors():
            async with self._engine.begin() as conn:
                row = (await conn.execute(select(d).where(d.c.host == host))).first()
                if row is None:
                    return None
                await conn.execute(delete(d).where(d.c.host == host))
        return _to_domain(row)

    async def list_domains(self, tenant_id: str | None = None) -> builtins.list[Domain]:
        """Every domain (or ``tenant_id``'s), ordered by host."""
        statement = select(domains_table)
        if tenant_id is not None:
            statement = statement.where(domains_table.c.tenant_id == tenant_id)
        with self._translate_errors():
            async with self._engine.begin() as conn:
                rows = (await conn.execute(statement)).all()
        return sorted((_to_domain(row) for row in rows), key=lambda domain: domain.host)

    async def get_by_domain(self, host: str) -> Tenant | None:
        """The tenant that owns ``host``, in any status, or ``None``: one indexed join."""
        return await self._select_one(_SELECT_BY_DOMAIN, {"host": host})

    async def claim_for_provisioning(
        self, *, limit: int, stale_before: datetime
    ) -> builtins.list[Tenant]:
        """Claim up to ``limit`` pending (or stale provisioning) tenants, oldest first.

        Each claim is a conditional UPDATE on the attempt count it read, so of two workers that
        read the same tenant exactly one wins, on every database. PostgreSQL and MariaDB/MySQL
        also lock the candidates with ``FOR UPDATE SKIP LOCKED``, so concurrent workers take
        different tenants instead of competing for the same ones. SQLite writers are serialised
        anyway; there each claim is its own short transaction.
        """
        t = tenants_table
        candidates = (
            select(t)
            .where(
                or_(
                    t.c.status == TenantStatus.PENDING.value,
                    and_(
                        t.c.status == TenantStatus.PROVISIONING.value,
                        t.c.updated_at < stale_before,
                    ),
                )
            )
            .order_by(t.c.created_at)
            .limit(limit)
        )
        claimed: builtins.list[Tenant] = []
        with self._translate_errors():
            if self._engine.dialect.name == "sqlite":
                async with self._engine.begin() as conn:
                    rows = (await conn.execute(candidates)).all()
                for row in rows:
                    async with self._engine.begin() as conn:
                        await _claim(conn, _to_tenant(row), claimed)
            else:
                locked = candidates.with_for_update(skip_locked=True)
                for attempt in range(1, _CLAIM_ATTEMPTS + 1):
                    try:
                        async with self._engine.begin() as conn:
                            for row in (await conn.execute(locked)).all():
                                await _claim(conn, _to_tenant(row), claimed)
                        break
                    except DBAPIError as exc:
                        # InnoDB locks the rows and the status index entries a claim updates in
                        # an order concurrent claims can cross: the victim's transaction is
                        # rolled back whole (nothing claimed), and it runs again.
                        claimed.clear()
                        if not is_deadlock(exc) or attempt == _CLAIM_ATTEMPTS:
                            raise
        return claimed

    async def list(self, *, include_deleted: bool = False) -> builtins.list[Tenant]:
        """All tenants ordered by identifier; soft-deleted ones only when asked for."""
        statement = select(tenants_table)
        if not include_deleted:
            gone = (TenantStatus.DELETED.value, TenantStatus.PURGING.value)
            statement = statement.where(tenants_table.c.status.not_in(gone))
        with self._translate_errors():
            async with self._engine.begin() as conn:
                rows = (await conn.execute(statement)).all()
        # Sorted here rather than by ORDER BY: database collations disagree on where '-' sorts, and
        # every store must return the same order.
        return sorted((_to_tenant(row) for row in rows), key=lambda tenant: tenant.identifier)

    async def _create_tables(self) -> None:
        # Imported here: Alembic loads only when a store starts, not when the package is imported.
        from fastapi_tenancy.migrations.central import check_central, upgrade_central

        if self._central_migrations == "check":
            await check_central(self._engine)
        else:
            await upgrade_central(self._engine)

    async def _select_one(self, statement: Any, params: dict[str, str]) -> Tenant | None:
        with self._translate_errors():
            async with self._engine.begin() as conn:
                row = (await conn.execute(statement, params)).first()
        return None if row is None else _to_tenant(row)

    @contextmanager
    def _translate_errors(self) -> Iterator[None]:
        """Turn driver errors into the library's: unreachable -> 503, duplicate -> 409.

        Any other error, a missing table above all, is a bug and propagates unchanged.
        """
        try:
            yield
        except IntegrityError as exc:
            raise TenantAlreadyExists("a tenant with this id or identifier already exists") from exc
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # The driver's message may echo connection parameters: only the code goes out.
            raise ServiceUnavailable(
                f"tenant store at {redact_url(self._engine.url)} is unavailable: {describe(exc)}"
            ) from exc


async def _claim(conn: AsyncConnection, seen: Tenant, claimed: builtins.list[Tenant]) -> None:
    stored = seen.model_copy(
        update={
            "status": TenantStatus.PROVISIONING,
            "provisioning_attempts": seen.provisioning_attempts + 1,
            "updated_at": datetime.now(UTC),
        }
    )
    t = tenants_table
    claim = (
        update(t)
        .where(
            t.c.id == seen.id,
            t.c.status == seen.status.value,
            t.c.provisioning_attempts == seen.provisioning_attempts,
        )
        .values(
            status=stored.status.value,
            provisioning_attempts=stored.provisioning_attempts,
            updated_at=stored.updated_at,
        )
    )
    if (await conn.execute(claim)).rowcount == 1:
        claimed.append(stored)


def _in_utc(tenant: Tenant) -> Tenant:
    """``tenant`` with its timestamps as the store returns them: aware and in UTC."""
    times: dict[str, Any] = {
        "created_at": _utc(tenant.created_at),
        "updated_at": _utc(tenant.updated_at),
    }
    if tenant.deleted_at is not None:
        times["deleted_at"] = _utc(tenant.deleted_at)
    return tenant.model_copy(update=times)


def _row_values(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "identifier": tenant.identifier,
        "name": tenant.name,
        "status": tenant.status.value,
        "metadata": tenant.metadata,
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
        "deleted_at": tenant.deleted_at,
        "storage_name": tenant.storage_name,
        "provisioning_attempts": tenant.provisioning_attempts,
        "database_url": (
            tenant.database_url.get_secret_value() if tenant.database_url is not None else None
        ),
        "server": tenant.server,
    }


def _literal(value: Any, string_literal: Callable[[str], str]) -> str:
    """``value`` of a `_row_values` column as a PostgreSQL literal of the column's type."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):  # no boolean column: refuse rather than guess
        raise TypeError(f"no literal for {value!r}")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, datetime):
        return f"{string_literal(value.isoformat())}::timestamptz"
    if isinstance(value, str):
        return string_literal(value)
    # The metadata column: what SQLAlchemy's JSON type sends, as text.
    return f"{string_literal(json.dumps(value))}::json"


def _to_domain(row: Row[Any]) -> Domain:
    return Domain(row.host, row.tenant_id, _utc(row.created_at))


def _to_tenant(row: Row[Any]) -> Tenant:
    return Tenant.model_validate(dict(row._mapping))


def _sqlite_busy(exc: DBAPIError) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (SQLITE_BUSY)."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    return (
        isinstance(orig, sqlite3.Error) and code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
    )

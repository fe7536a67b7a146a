"""Engine construction: pool settings in, an AsyncEngine with the session hygiene out."""

from __future__ import annotations

import asyncio
import os
import re
import select
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolResetState, StaticPool
from sqlalchemy.util import await_

from fastapi_tenancy._secrets import redact_url
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.pgwire import (
    POSTGRES_SESSION_RESET,
    WireState,
    connection_class,
    forget_pending,
    take_reset_done,
)

__all__ = [
    "POSTGRES_SESSION_RESET",
    "EngineFamily",
    "PoolOptions",
    "app_engine",
    "create_engine",
    "listen_pre_ping",
    "note_reset_at_checkin",
    "redact_url",
    "reset_postgres_session",
    "reset_sqlite_session",
    "same_database",
]

SQLITE_BUSY_TIMEOUT_SECONDS = 30
# ``database_pool_pre_ping`` tests a connection that has sat in the pool longer than this. One
# used more recently is trusted: a server connection killed since then has usually told the
# client already (a closed socket costs no round trip to see), and a busy pool would otherwise
# pay a round trip (three through asyncpg: BEGIN, the ping, ROLLBACK) on every checkout.
PRE_PING_IDLE_SECONDS = 1.0
_IDLE_SINCE_KEY = "fastapi_tenancy.idle_since"
_POLL = getattr(select, "poll", None)
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP if _POLL else 0
# The package extra that installs each driver.
DRIVER_EXTRAS = {"asyncpg": "postgres", "aiomysql": "mysql"}

# A SQLite connection keeps its temporary schema, which is searched before ``main`` (a temporary
# table shadows a tenant table; a temporary trigger sees a tenant's writes), and its pragmas.
# One local query finds what is left; a clean connection costs nothing more.
SQLITE_LEFTOVERS = (
    "SELECT type, name FROM temp.sqlite_master WHERE type IN ('table', 'view', 'trigger') "
    "UNION ALL SELECT 'pragma', 'foreign_keys' FROM pragma_foreign_keys WHERE foreign_keys = 0"
)

# MariaDB/MySQL have no statement that clears a session, and COM_RESET_CONNECTION (not reachable
# through aiomysql) would also reset the character set and autocommit mode behind the driver's
# back. A statement that can leave session state (a temporary table, a user variable, a session
# SET, a named lock, a procedure call) marks its connection instead, and a marked connection is
# replaced at its next checkout rather than reused.
_MYSQL_SESSION_STATE = re.compile(
    r"\bTEMPORARY\b|(?<![@\w])@(?!@)|\b(?:GET_LOCK|LOCK\s+TABLES?|CALL|PREPARE|HANDLER)\b"
    r"|(?:\A|;)\s*(?:/\*.*?\*/\s*)*SET\b",
    re.IGNORECASE | re.DOTALL,
)
_SESSION_STATE_KEY = "fastapi_tenancy.session_state"


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How `create_engine` and `EngineFamily` build an engine (`_wiring.engine_options` maps the
    settings).

    ``pgbouncer`` means the URL is PgBouncer in transaction mode (no prepared-statement caches,
    no session reset); ``statement_timeout`` caps each statement, in seconds. ``null_pool`` opens
    a new connection for every use and keeps none (readiness checks), except for an in-memory
    SQLite database, which only exists in its one shared connection.
    """

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = 1800
    pool_pre_ping: bool = True
    echo: bool = False
    pgbouncer: bool = False
    statement_timeout: float | None = None
    null_pool: bool = False


def create_engine(url: str, options: PoolOptions | None = None, /, **settings: Any) -> AsyncEngine:
    """An AsyncEngine for ``url`` with the session hygiene and the pool of ``options``.

    ``settings`` are `PoolOptions` fields as keywords, over ``options`` (default: its defaults).
    """
    engine, _ = _create_engine(url, _pool_options(options, settings))
    return engine


def _pool_options(options: PoolOptions | None, settings: dict[str, Any]) -> PoolOptions:
    """``options`` (default: `PoolOptions`'s defaults) with ``settings`` (its field names)."""
    if options is None:
        return PoolOptions(**settings)
    return replace(options, **settings) if settings else options


def _create_engine(url: str, options: PoolOptions) -> tuple[AsyncEngine, dict[str, Any]]:
    """`create_engine`, and the driver's ``connect_args`` it was given."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"database URL {redact_url(url)} cannot be parsed") from exc
    pool_pre_ping, null_pool = options.pool_pre_ping, options.null_pool
    pgbouncer = options.pgbouncer
    engine_options: dict[str, Any] = {"echo": options.echo}
    pool: dict[str, Any] = {
        "pool_size": options.pool_size,
        "max_overflow": options.max_overflow,
        "pool_timeout": options.pool_timeout,
        "pool_recycle": options.pool_recycle,
        # On asyncpg, pre-ping is the checkout hook below (closed or idle connections only);
        # other drivers keep SQLAlchemy's, one cheap ping (MySQL's COM_PING) per checkout.
        "pool_pre_ping": pool_pre_ping and parsed.get_driver_name() != "asyncpg",
    }
    if null_pool:
        pool = {"poolclass": NullPool}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, engine_options, pool), {}
    engine_options.update(pool)
    mysql = backend in ("mysql", "mariadb")
    if mysql and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    is_asyncpg = parsed.get_driver_name() == "asyncpg"
    if is_asyncpg:
        # Lets a tenant transaction's binding ride on its BEGIN (fastapi_tenancy.pgwire).
        with suppress(ImportError):  # a missing driver is reported below, with its fix
            engine_options["connect_args"] = {"connection_class": connection_class()}
    if pgbouncer and is_asyncpg:
        # PgBouncer in transaction mode hands each transaction to any server connection, so a
        # prepared statement must never outlive its transaction or reuse a name: no caches, and
        # a fresh name for every statement.
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": "0"})
        engine_options.setdefault("connect_args", {}).update(
            statement_cache_size=0, prepared_statement_name_func=_unique_statement_name
        )
    timeout = options.statement_timeout
    if timeout is not None and is_asyncpg:
        # Client side: asyncpg cancels the statement on the server when it runs too long, and
        # the wait also ends when the network stalls. No session setting, so nothing to reset
        # and nothing PgBouncer could carry to another client.
        engine_options.setdefault("connect_args", {})["command_timeout"] = timeout
    try:
        engine = create_async_engine(parsed, **engine_options)
    except ImportError as exc:
        driver = parsed.get_driver_name()
        extra = DRIVER_EXTRAS.get(driver)
        fix = f'pip install "fastapi-tenancy-kit[{extra}]"' if extra else f"install {driver}"
        raise ConfigurationError(
            f"{redact_url(parsed)} needs the {driver} driver, which is not installed: {fix}"
        ) from exc
    if is_asyncpg and not (pgbouncer or null_pool):
        # A NullPool closes every connection it is given back: nothing to reset. Behind PgBouncer
        # in transaction mode the next transaction may run on any server connection, so the
        # reset belongs to PgBouncer (server_reset_query_always); see docs/isolation.md.
        event.listen(engine.sync_engine, "connect", note_reset_at_checkin)
        event.listen(engine.sync_engine, "reset", reset_postgres_session)
    elif is_asyncpg:
        event.listen(engine.sync_engine, "checkin", _forget_pending)
    if pool_pre_ping and is_asyncpg and not null_pool:
        listen_pre_ping(engine)
    if timeout is not None and mysql:
        event.listen(engine.sync_engine, "connect", _mysql_statement_timeout(timeout))
    if mysql and not null_pool:
        event.listen(engine.sync_engine, "before_cursor_execute", _mark_mysql_session_state)
        event.listen(engine.sync_engine, "reset", _replace_marked_connection)
    return engine, dict(engine_options.get("connect_args", {}))


# Backends whose engines of one server share a dialect in an `EngineFamily`.
_FAMILY_BACKENDS = frozenset({"postgresql"})
# asyncpg's default, sslmode "prefer", opens every connection with an SSL request and falls back
# to a plain connection when the server declines: a round trip, and an SSL context built, for
# nothing on a server without SSL. In a family, a server that declined is not asked again for
# this long: new connections go without SSL at once, as the fallback would. A server that
# starts offering SSL is used with it from the next check on. Any explicit choice (``ssl`` in
# the URL or connect_args, ``PGSSLMODE``) is left to asyncpg.
PLAIN_SERVER_RECHECK_SECONDS = 60.0
_SSL_CHOICES = frozenset({"ssl", "sslmode", "direct_tls", "dsn", "service"})
_SSL_ENVIRONMENT = frozenset({"PGSSLMODE", "PGSSLNEGOTIATION", "PGSERVICE"})


class EngineFamily:
    """Engines for many databases of a few servers: one engine per database, one dialect per server.

    Database isolation builds an engine per tenant database, and the tenants of one server
    differ only in the database's name. An engine of its own (`create_engine`) initialises its
    dialect on its first connection (server version, default schema, isolation level,
    ``standard_conforming_strings``: about ten round trips through asyncpg) and compiles every
    statement anew; with more active tenants than cached engines, that is paid again on every
    eviction. The engines of a family that share a server (the URL but for its database) share
    its dialect, initialised once, and its compiled-statement cache; each has a pool of its own,
    with the listeners `create_engine` gives one. A new engine's first connection costs one
    connect.

    The dialect is initialised when the family's first connection to that server is needed, on
    a connection of its own to that same database, opened and closed before the connection
    asked for is opened (so it uses the same slot of a connection budget); first connections
    of other engines of the server wait for it. What the dialect reads then (the server's
    version, default schema and default isolation level) is taken for every database of the
    server: databases given other defaults (``ALTER DATABASE … SET search_path``) need engines
    of their own (`create_engine`). Only PostgreSQL URLs form families; other URLs, and
    ``null_pool`` engines, get `create_engine`'s engine.

    ``options`` and ``settings`` are `create_engine`'s.
    """

    def __init__(self, options: PoolOptions | None = None, /, **settings: Any) -> None:
        self._options = _pool_options(options, settings)
        self._servers: dict[str, _Server] = {}

    def __call__(self, url: str) -> AsyncEngine:
        """A new engine for ``url``, sharing its server's dialect with the family's others."""
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigurationError(f"database URL {redact_url(url)} cannot be parsed") from exc
        if parsed.get_backend_name() not in _FAMILY_BACKENDS or self._options.null_pool:
            return create_engine(url, self._options)
        key = parsed.set(database="").render_as_string(hide_password=False)
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = _Server(*_create_engine(url, self._options))
        return server.engine(parsed.database)

    @property
    def initialisations(self) -> int:
        """How many times a dialect of the family was initialised (once per server)."""
        return sum(server.initialisations for server in self._servers.values())


class _Server:
    """One server of an `EngineFamily`: an engine built by `create_engine`, never used itself.

    Its dialect, compiled-statement cache and listeners are shared by the engines built from
    it; its pool opens one connection, once, to initialise the dialect.
    """

    def __init__(self, prototype: AsyncEngine, connect_args: dict[str, Any]) -> None:
        self._prototype = prototype.sync_engine
        self._connect_args = connect_args
        self._ready = False
        # Until when new connections skip the SSL request this server last declined.
        self._plain_until = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.initialisations = 0

    def engine(self, database: str | None) -> AsyncEngine:
        prototype = self._prototype
        dialect = prototype.dialect
        url = prototype.url.set(database=database)

        cargs, cparams = self._connect_args_for(database)

        # Named as create_engine's creator names it: the pool then passes the record.
        def connect(connection_record: ConnectionPoolEntry | None = None) -> DBAPIConnection:
            if not self._ready:
                self._initialise(database)
            return self._open(cargs, cparams, connection_record)

        # The prototype's pool settings and listeners (the dialect's on-connect setup, the
        # session reset, pre-ping), with a creator for this database.
        pool = prototype.pool.recreate()
        pool._creator = connect  # the setter also wraps it
        engine = Engine(
            pool,
            dialect,
            url,
            logging_name=prototype.logging_name,
            echo=prototype.echo,
            query_cache_size=0,
            hide_parameters=prototype.hide_parameters,
        )
        # Statements compile once for the server: the cache's keys include the dialect.
        engine._compiled_cache = prototype._compiled_cache
        # Connection-level listeners (as an Engine's execution_options() copy shares them).
        engine.dispatch._update(prototype.dispatch)
        engine._has_events = prototype._has_events
        return AsyncEngine(engine)

    def _connect_args_for(self, database: str | None) -> tuple[list[Any], dict[str, Any]]:
        dialect = self._prototype.dialect
        cargs, cparams = dialect.create_connect_args(self._prototype.url.set(database=database))
        return list(cargs), {**cparams, **self._connect_args}

    def _open(
        self, cargs: list[Any], cparams: dict[str, Any], record: ConnectionPoolEntry | None
    ) -> DBAPIConnection:
        """A new connection, opened as `create_engine`'s creator opens one."""
        dialect = self._prototype.dialect
        args, params = list(cargs), dict(cparams)
        advisory_ssl = self._advisory_ssl(params)
        if advisory_ssl and time.monotonic() < self._plain_until:
            params["ssl"] = False
            advisory_ssl = False
        if dialect._has_events:  # do_connect hooks (a password from a token, say)
            for hook in dialect.dispatch.do_connect:
                connection = hook(dialect, record, args, params)
                if connection is not None:
                    return cast(DBAPIConnection, connection)
        opened: DBAPIConnection = dialect.connect(*args, **params)
        if advisory_ssl:
            self._note_ssl(opened)
        return opened

    def _advisory_ssl(self, cparams: dict[str, Any]) -> bool:
        """Whether asyncpg would connect with ``sslmode=prefer`` (its default) to one TCP host."""
        if self._prototype.dialect.driver != "asyncpg":
            return False
        if _SSL_CHOICES.intersection(cparams) or _SSL_ENVIRONMENT.intersection(os.environ):
            return False
        host = cparams.get("host")
        return not isinstance(host, list) and not str(host or "").startswith("/")

    def _note_ssl(self, connection: DBAPIConnection) -> None:
        transport = getattr(connection.driver_connection, "_transport", None)
        if transport is None:
            return
        if transport.get_extra_info("ssl_object") is None:
            self._plain_until = time.monotonic() + PLAIN_SERVER_RECHECK_SECONDS
        else:
            self._plain_until = 0.0

    def _initialise(self, database: str | None) -> None:
        """Initialise the dialect on a connection of the prototype's own (in the greenlet)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        lock = self._lock
        await_(lock.acquire())
        try:
            if self._ready:
                return
            prototype = self._prototype
            # The database asked for: it exists, and the connection may use it.
            cargs, cparams = self._connect_args_for(database)
            prototype.pool._creator = lambda connection_record: self._open(
                cargs, cparams, connection_record
            )
            # SQLAlchemy's first-connect hook initialises the dialect on this connection.
            with prototype.connect():
                pass
            prototype.pool.dispose()
            self._ready = True
            self.initialisations += 1
        finally:
            lock.release()


def reset_postgres_session(
    dbapi_connection: Any, _record: ConnectionPoolEntry, reset_state: PoolResetState
) -> None:
    """Pool ``reset`` hook: nothing one checkout leaves on the connection reaches the next."""
    if reset_state.terminate_only or not reset_state.asyncio_safe:
        return  # the connection is being closed, and its session state with it
    if take_reset_done(dbapi_connection.driver_connection):
        return  # a tenant session's last ROLLBACK carried the reset (fastapi_tenancy.pgwire)
    # The rollback comes first: a transaction still open (or failed) would swallow the reset.
    # With no transaction open (the usual case after a commit) it costs nothing.
    dbapi_connection.rollback()
    dbapi_connection.run_async(lambda connection: connection.execute(POSTGRES_SESSION_RESET))


def listen_pre_ping(engine: AsyncEngine) -> None:
    """Test ``engine``'s connections at checkout: closed ones always, idle ones with a ping.

    A connection whose server side has gone (``pg_terminate_backend``, a restart) is usually
    already closed on the client, or its socket holds the server's goodbye, unread: the
    transport's state and one ``poll`` of the socket (no round trip, no turn of the event loop)
    see either; a socket with anything to read is pinged. One idle for longer than
    `PRE_PING_IDLE_SECONDS` (where a silent firewall drop or an idle timeout hides) is pinged.
    Either way a dead connection raises `DisconnectionError`, on which the pool discards it and
    checks out another; one that dies after this check fails its request with a 503 and takes
    the pool's older connections with it (SQLAlchemy invalidates them together).
    """
    dialect = engine.dialect

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE_KEY, None)
        if idle_since is None:
            return  # opened for this checkout (never checked in): nothing to test yet
        state = _socket_state(dbapi_connection.driver_connection)
        if state == "closed":
            raise DisconnectionError("the server closed this connection")
        if state == "quiet" and time.monotonic() - idle_since <= PRE_PING_IDLE_SECONDS:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"the connection failed its ping: {exc}") from exc
        if not alive:
            raise DisconnectionError("the connection failed its ping")

    def checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE_KEY] = time.monotonic()

    event.listen(engine.sync_engine, "checkout", checkout)
    event.listen(engine.sync_engine, "checkin", checkin)


def _socket_state(driver: Any) -> str:
    """``closed``, ``unread`` or ``quiet``: an idle connection as the client can see it, no I/O.

    ``closed``: the driver knows the connection closed, or its transport is closing (aborted in
    this process, its socket released on the loop's next turn). ``unread``: the socket has
    something the event loop has not read yet, such as the server's goodbye
    (``pg_terminate_backend``'s FATAL message, then the end of the stream), which earns the
    connection a ping. ``quiet``: nothing. One ``poll`` with a zero timeout answers, one system
    call (a peek through a duplicated descriptor took three, and a turn of the event loop a
    ``select`` over every socket of the process). Drivers without a socket to look at, and
    platforms without ``poll``, are ``quiet`` unless closed.
    """
    is_closed = getattr(driver, "is_closed", None)
    if is_closed is not None and is_closed():
        return "closed"
    transport = getattr(driver, "_transport", None)
    if transport is None:
        return "quiet"
    if transport.is_closing():
        return "closed"
    sock = transport.get_extra_info("socket")
    if sock is None or _POLL is None:
        return "quiet"
    poller = _POLL()
    poller.register(sock.fileno(), _READABLE)
    return "unread" if poller.poll(0) else "quiet"


def note_reset_at_checkin(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """Pool ``connect`` hook: this connection's tenant sessions may send the reset themselves."""
    driver = dbapi_connection.driver_connection
    if isinstance(driver, WireState):
        driver.resets_at_checkin = True


def _forget_pending(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    if dbapi_connection is not None:
        forget_pending(dbapi_connection.driver_connection)


def _mysql_statement_timeout(seconds: float) -> Callable[[Any, Any], None]:
    def limit(dbapi_connection: Any, _record: Any) -> None:
        # Once per new connection (the same for every tenant, so it may outlive a checkout).
        # The server's handshake says which of the two it is: no extra round trip to ask.
        server = str(dbapi_connection.driver_connection.get_server_info())
        if "mariadb" in server.lower():
            statement = f"SET SESSION max_statement_time = {seconds:.6f}"
        else:
            statement = f"SET SESSION max_execution_time = {max(1, round(seconds * 1000))}"
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()

    return limit


def reset_sqlite_session(
    dbapi_connection: Any, _record: ConnectionPoolEntry, reset_state: PoolResetState
) -> None:
    """Pool ``reset`` hook for SQLite: temporary objects dropped, foreign keys back on."""
    if reset_state.terminate_only or not reset_state.asyncio_safe:
        return
    dbapi_connection.rollback()
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(SQLITE_LEFTOVERS)
        for kind, name in cursor.fetchall():
            if kind == "pragma":
                cursor.execute("PRAGMA foreign_keys=ON")
            else:
                quoted = name.replace('"', '""')
                cursor.execute(f'DROP {kind.upper()} IF EXISTS temp."{quoted}"')
    finally:
        cursor.close()


def _mark_mysql_session_state(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
    if _MYSQL_SESSION_STATE.search(statement):
        conn.info[_SESSION_STATE_KEY] = True  # the pooled connection's info: it outlives `conn`


def _replace_marked_connection(
    _dbapi_connection: Any, record: ConnectionPoolEntry | None, _reset_state: PoolResetState
) -> None:
    if record is not None and record.info.pop(_SESSION_STATE_KEY, False):
        # Soft: the pool closes the connection and opens a new one at its next checkout.
        record.invalidate(soft=True)


def _unique_statement_name() -> str:
    return f"__fastapi_tenancy_{uuid.uuid4().hex}__"


def _sqlite_engine(parsed: URL, options: dict[str, Any], pool: dict[str, Any]) -> AsyncEngine:
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(parsed):
        # Every connection to an in-memory database is a new, empty database: share one.
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        options.update(pool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    engine = create_async_engine(parsed, **options)
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    event.listen(engine.sync_engine, "reset", reset_sqlite_session)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer, so concurrent tenant requests do not fail with
    # "database is locked"; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    finally:
        cursor.close()


def app_engine(engine: AsyncEngine | async_sessionmaker[Any]) -> AsyncEngine:
    """The `AsyncEngine` an app hands over: the engine itself, or its sessionmaker's bind."""
    if isinstance(engine, AsyncEngine):
        return engine
    if isinstance(engine, async_sessionmaker):
        bind = engine.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            return bind
        raise ConfigurationError(
            "engine=: the async_sessionmaker has no AsyncEngine bind (pass the engine itself, "
            "or build the sessionmaker with async_sessionmaker(engine))"
        )
    raise ConfigurationError(
        f"engine= takes an AsyncEngine or an async_sessionmaker, not {type(engine).__name__}"
    )


def same_database(first: URL, second: URL) -> bool:
    """Whether two URLs reach the same database as the same user (drivers and options aside)."""

    def key(url: URL) -> tuple[Any, ...]:
        backend = url.get_backend_name()
        backend = "mysql" if backend == "mariadb" else backend
        return (backend, url.host or "", url.port, url.database or "", url.username or "")

    return key(first) == key(second)

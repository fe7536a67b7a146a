"""The one answer to "is this failure the storage being unreachable right now?" (a 503).

`is_unavailable` is used wherever a database failure is turned into an answer: the tenant store
(lookups), tenant sessions, provisioning and readiness. It says yes for failures of the
connection, and no for failures of the statement, which are bugs to see in the logs (a 500):

* the pool handed out no connection within ``database_pool_timeout``;
* a connection was lost while in use (SQLAlchemy marks the error ``connection_invalidated``);
* the server refused or dropped the connection, judged by the driver's error code rather than
  by the exception's class, because drivers disagree on classes (asyncpg's connect-time errors
  reach SQLAlchemy as a plain ``DBAPIError``; SQLite's "no such table" is an
  ``OperationalError`` like its "database is locked"):

  - PostgreSQL SQLSTATE: class ``08`` (connection exception), class ``53`` (insufficient
    resources: too many clients 53300, out of memory, disk full), ``57P01`` admin shutdown,
    ``57P02`` crash shutdown, ``57P03`` cannot connect now (starting up, shutting down, in
    recovery), ``57P04`` database dropped, ``57P05`` idle session timeout; while connecting also
    ``3D000`` (the database does not exist: dropped) and ``55000`` (it accepts no connections);
  - MySQL/MariaDB error codes: 1040 too many connections, 1203 ``max_user_connections``, 1226
    a user resource limit, 1053 server shutdown, 1927 connection killed, 2002/2003/2005 cannot
    connect, 2006/2013/2055 server gone away or connection lost, 4031 disconnected by the
    server; while connecting also 1049 (unknown database);
  - SQLite result codes: ``SQLITE_BUSY``/``SQLITE_LOCKED`` (database is locked),
    ``SQLITE_CANTOPEN`` (unable to open database file), ``SQLITE_IOERR``, ``SQLITE_FULL``;

* an ``OSError`` (refused, reset, timed out, unresolvable host) raised inside the driver or
  while the pool opens a connection. Drivers raise some of these unwrapped (asyncpg raises
  ``ConnectionRefusedError``), so they are recognised by where they were raised: an ``OSError``
  of the app's own, such as a missing file, stays the app's error.

Everything else is not: a missing table (42P01, 1146, "no such table"), a syntax error, a
constraint violation, a failed login (SQLSTATE class 28, MySQL 1045: a misconfiguration, not an
outage), a deadlock (40P01). A statement the server stopped at ``statement_timeout`` (57014,
1969, 3024) is no outage either, but `unavailable_as_503` answers it with 503 as well
(`is_statement_timeout`).
"""

from __future__ import annotations

import sqlite3
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fastapi_tenancy.exceptions import ServiceUnavailable

__all__ = [
    "describe",
    "is_deadlock",
    "is_statement_timeout",
    "is_unavailable",
    "unavailable_as_503",
]

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_UNAVAILABLE_CLASSES = ("08", "53")
_PG_UNAVAILABLE = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
_PG_UNAVAILABLE_WHILE_CONNECTING = frozenset({"3D000", "55000"})

# A statement stopped by the server's statement timeout: PostgreSQL query_canceled, MariaDB
# ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT.
_PG_QUERY_CANCELED = "57014"
_MYSQL_STATEMENT_TIMEOUT = frozenset({1969, 3024})

# A transaction the server rolled back to break a deadlock: PostgreSQL deadlock_detected and
# serialization_failure, MySQL/MariaDB ER_LOCK_DEADLOCK.
_PG_DEADLOCK = frozenset({"40P01", "40001"})
_MYSQL_DEADLOCK = 1213

# MySQL/MariaDB server and client error numbers (``args[0]`` of PyMySQL's and asyncmy's errors).
_MYSQL_UNAVAILABLE = frozenset(
    {1040, 1053, 1203, 1226, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031}
)
_MYSQL_UNAVAILABLE_WHILE_CONNECTING = frozenset({1049})

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)

# Packages whose frames mark an ``OSError`` as the database connection's, not the app's.
_DRIVER_PACKAGES = frozenset({"asyncpg", "aiomysql", "pymysql", "asyncmy", "aiosqlite", "psycopg"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached, rather than a failed statement."""
    if not isinstance(exc, Exception):
        return False  # cancellation and interpreter exits are never a storage failure
    if isinstance(exc, ServiceUnavailable | PoolTimeout):
        return True
    raised = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        if exc.orig is not None:
            exc = exc.orig
    code = _code(exc)
    if code is not None:
        always, while_connecting = code
        return always or (while_connecting and _raised_while_connecting(exc, raised))
    return isinstance(exc, OSError) and _raised_by_the_driver(exc)


def describe(exc: BaseException) -> str:
    """The failure's class and error code, e.g. ``TooManyConnectionsError (SQLSTATE 53300)``.

    Never the driver's message, which may echo connection parameters.
    """
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    name = type(exc.__cause__ if _is_adapter(exc) else exc).__name__
    if isinstance(exc, sqlite3.Error) and exc.sqlite_errorname is not None:
        return f"{name} ({exc.sqlite_errorname})"
    number = _mysql_number(exc)
    if number is not None:
        return f"{name} (MySQL error {number})"
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        return f"{name} (SQLSTATE {sqlstate})"
    return name


@contextmanager
def unavailable_as_503(what: str) -> Iterator[None]:
    """Re-raise an `is_unavailable` failure inside the block as `ServiceUnavailable`.

    The message names ``what`` and the failure as `describe` puts it, never the driver's text.
    The original error stays attached as ``__cause__`` for the logs.
    """
    try:
        yield
    except ServiceUnavailable:
        raise
    except Exception as exc:
        if is_statement_timeout(exc):
            raise ServiceUnavailable(f"{what} timed out: {describe(exc)}") from exc
        if not is_unavailable(exc):
            raise
        raise ServiceUnavailable(f"{what} is unavailable: {describe(exc)}") from exc


def is_statement_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a statement the server stopped for running too long (a 503 too).

    That is ``statement_timeout`` where the server enforces it: MariaDB's ``max_statement_time``
    (1969), MySQL's ``max_execution_time`` (3024), PostgreSQL's ``statement_timeout`` (57014,
    which ``pg_cancel_backend`` raises too). asyncpg's own ``command_timeout`` raises
    ``TimeoutError`` in the driver, which `is_unavailable` already counts.
    """
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if _mysql_number(exc) in _MYSQL_STATEMENT_TIMEOUT:
        return True
    return _sqlstate(exc) == _PG_QUERY_CANCELED


def is_deadlock(exc: BaseException) -> bool:
    """Whether the server rolled ``exc``'s transaction back to break a deadlock.

    Not an outage and not a bug: the transaction lost a race with another one, and running it
    again is the remedy the servers document.
    """
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    if _mysql_number(exc) == _MYSQL_DEADLOCK:
        return True
    return _sqlstate(exc) in _PG_DEADLOCK


def _code(exc: BaseException) -> tuple[bool, bool] | None:
    """For a driver error with a code: (unavailable anywhere, unavailable while connecting)."""
    if isinstance(exc, sqlite3.Error):
        code = exc.sqlite_errorcode
        return (code is not None and code & 0xFF in _SQLITE_UNAVAILABLE, False)
    number = _mysql_number(exc)
    if number is not None:
        return (number in _MYSQL_UNAVAILABLE, number in _MYSQL_UNAVAILABLE_WHILE_CONNECTING)
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        always = sqlstate[:2] in _PG_UNAVAILABLE_CLASSES or sqlstate in _PG_UNAVAILABLE
        return (always, sqlstate in _PG_UNAVAILABLE_WHILE_CONNECTING)
    return None


def _mysql_number(exc: BaseException) -> int | None:
    # MySQL drivers put the server's or client's error number first; their ``sqlstate``, when
    # they set one, is coarser (1040 and 1203 share 08004/42000 with unrelated errors).
    if _package(exc) in {"pymysql", "aiomysql", "asyncmy"} and exc.args:
        number = exc.args[0]
        if isinstance(number, int):
            return number
    return None


def _sqlstate(exc: BaseException) -> str | None:
    # asyncpg's errors and SQLAlchemy's adapters of them carry ``sqlstate``; psycopg's too.
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) and len(sqlstate) == 5 else None


def _package(exc: BaseException) -> str:
    return type(exc).__module__.split(".", 1)[0]


def _is_adapter(exc: BaseException) -> bool:
    # SQLAlchemy's asyncpg dialect wraps asyncpg's error in its own class, named just "Error".
    return _package(exc) == "sqlalchemy" and exc.__cause__ is not None


def _raised_while_connecting(*errors: BaseException) -> bool:
    # The driver's error carries the frames below SQLAlchemy's wrapper, where the pool connects.
    return any(
        _is_dialect_connect(frame)
        for error in errors
        for frame, _ in traceback.walk_tb(error.__traceback__)
    )


def _raised_by_the_driver(exc: BaseException) -> bool:
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if _is_dialect_connect(frame):
            return True
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.split(".", 1)[0] in _DRIVER_PACKAGES:
            return True
    return False


def _is_dialect_connect(frame: FrameType) -> bool:
    """Whether ``frame`` is `Dialect.connect`: the pool opening a new DBAPI connection."""
    return frame.f_code.co_name == "connect" and isinstance(frame.f_locals.get("self"), Dialect)

"""What tenant transactions send to PostgreSQL through asyncpg, in as few round trips as possible.

A tenant request on PostgreSQL sends ``BEGIN``, its statements, and ``ROLLBACK`` (or ``COMMIT``),
like any SQLAlchemy app. Two more things belong to every tenant transaction, and each would cost
a round trip of its own:

* **the binding**: ``set_config('search_path', …, true)`` (schema isolation) or
  ``set_config('fastapi_tenancy.tenant_id', …, true)`` (row-level security), transaction-local so
  that it ends with the transaction and no pooled connection (nor a PgBouncer server connection)
  ever keeps it. `TenancyConnection` sends it in the same simple-query message as the ``BEGIN``
  that asyncpg sends at the transaction's first statement: ``BEGIN; SELECT set_config(…, true)``.
  After a commit the next transaction sends it again with its own ``BEGIN``.
* **the session reset** (`POSTGRES_SESSION_RESET`) as the connection goes back to the pool: a
  tenant session hands its connection back with the end of its transaction (``commit()``, or the
  ``ROLLBACK`` of ``close()``), so the reset goes in the same message as that ``COMMIT`` or
  ``ROLLBACK``, and the pool's ``reset`` hook (`fastapi_tenancy.engines`) finds nothing left to
  do. (A failed ``COMMIT`` skips the rest of its message; the hook then sends the reset.)

A simple-query message takes no parameters, so values are written as escaped string literals
(`string_literal`); setting names are constants of this package. Both pieces are pending state
on the connection, set just before the message they ride on and dropped when the connection goes
back to the pool (`forget_pending`), so nothing reaches the next checkout.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

__all__ = [
    "POSTGRES_SESSION_RESET",
    "WireState",
    "bind_transaction",
    "connection_class",
    "forget_pending",
    "reset_at_end",
    "string_literal",
    "take_reset_done",
]

# Everything a PostgreSQL session keeps beyond its transaction, undone as a connection goes back
# to the pool: open cursors, session-level SET, temporary tables (PostgreSQL searches pg_temp
# before every other schema), sequence state (currval), advisory locks and LISTEN channels. One
# simple-protocol message, so one round trip. Not DISCARD ALL: it cannot share a message with
# other statements, and its DEALLOCATE ALL would drop asyncpg's cached prepared statements.
POSTGRES_SESSION_RESET = (
    "CLOSE ALL; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; "
    "SELECT pg_advisory_unlock_all(); UNLISTEN *"
)

# What asyncpg's top-level Transaction sends (transaction.py); savepoints send other text.
_BEGIN = "BEGIN"
_ROLLBACK = "ROLLBACK;"
_COMMIT = "COMMIT;"


def string_literal(value: str) -> str:
    """``value`` as a PostgreSQL string literal, whatever ``standard_conforming_strings`` says.

    An escape string (``E'…'``) reads backslashes the same way under every setting; doubling
    backslashes and quotes leaves nothing that could end the literal early.
    """
    if "\x00" in value:
        raise ValueError("a PostgreSQL string cannot hold a NUL character")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class WireState:
    """What a tenant transaction leaves pending on its asyncpg connection; see the module.

    Mixed into asyncpg's ``Connection`` by `connection_class` (asyncpg is an optional extra, so
    the class is built on first use); engines built by `fastapi_tenancy.engines.create_engine`
    connect with it. It changes nothing until a tenant session asks.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SQL sent after the next top-level BEGIN, in the same message.
        self._after_begin: str | None = None
        # Whether the pool resets this connection at check-in (set by the engine's hook).
        self.resets_at_checkin = False
        # Whether the next top-level COMMIT or ROLLBACK carries the check-in reset, and whether
        # one did.
        self._reset_at_end = False
        self._reset_done = False

    async def execute(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 - asyncpg's own signature
    ) -> str:
        # asyncpg's Transaction sends BEGIN and ROLLBACK through execute() without arguments.
        if not args:
            if self._after_begin is not None and query.startswith(_BEGIN):
                query = f"{query} {self._after_begin}"
                self._after_begin = None
            elif self._reset_at_end and query in (_ROLLBACK, _COMMIT):
                # A failed COMMIT skips the rest of the message: the pool's hook then resets.
                self._reset_at_end = False
                query = f"{query} {POSTGRES_SESSION_RESET}"
                status: str = await super().execute(query, timeout=timeout)  # type: ignore[misc]
                self._reset_done = True
                return status
        result: str = await super().execute(query, *args, timeout=timeout)  # type: ignore[misc]
        return result

    def send_with_begin(self, sql: str) -> None:
        self._after_begin = sql

    def reset_at_end(self) -> None:
        if self.resets_at_checkin:
            self._reset_at_end = True

    def forget_pending(self) -> None:
        self._after_begin = None
        self._reset_at_end = False
        self._reset_done = False


@cache
def connection_class() -> type[Any]:
    """asyncpg's ``Connection`` with `WireState` mixed in (asyncpg's ``connection_class``)."""
    import asyncpg  # the optional "postgres" extra: only engines on asyncpg get here

    return type("TenancyConnection", (WireState, asyncpg.Connection), {})


def bind_transaction(connection: Connection, settings: Mapping[str, str]) -> None:
    """Set each of ``settings`` transaction-locally for the transaction ``connection`` begins.

    On an asyncpg connection of `connection_class` whose transaction has not reached the server
    yet, the settings go with its ``BEGIN``; otherwise (another driver, or a transaction already
    open) they are one statement of their own, executed now.
    """
    driver = _driver(connection)
    adapter = connection.connection.dbapi_connection
    # asyncpg's adapter starts the server transaction at the first statement; until then its
    # transaction is None. An adapter without the attribute takes the separate statement.
    if isinstance(driver, WireState) and getattr(adapter, "_transaction", True) is None:
        calls = ", ".join(
            f"set_config({string_literal(name)}, {string_literal(value)}, true)"
            for name, value in settings.items()
        )
        driver.send_with_begin(f"SELECT {calls}")
        return
    names = list(settings)
    calls = ", ".join(f"set_config(:name{i}, :value{i}, true)" for i in range(len(names)))
    parameters: dict[str, str] = {}
    for i, name in enumerate(names):
        parameters[f"name{i}"] = name
        parameters[f"value{i}"] = settings[name]
    connection.execute(text(f"SELECT {calls}"), parameters)


def reset_at_end(connection: Connection) -> None:
    """Let the COMMIT or ROLLBACK that ends ``connection``'s transaction carry the check-in reset.

    For a connection that goes back to the pool with the end of its transaction.
    """
    driver = _driver(connection)
    if isinstance(driver, WireState):
        driver.reset_at_end()


def forget_pending(driver_connection: Any) -> None:
    """Drop whatever a tenant session left pending on ``driver_connection`` (at check-in)."""
    if isinstance(driver_connection, WireState):
        driver_connection.forget_pending()


def take_reset_done(driver_connection: Any) -> bool:
    """Whether the last ROLLBACK already reset ``driver_connection``'s session; clears it."""
    if not isinstance(driver_connection, WireState):
        return False
    done = driver_connection._reset_done
    driver_connection.forget_pending()
    return done


def _driver(connection: Connection) -> Any:
    if connection.closed or connection.invalidated:
        return None
    return connection.connection.driver_connection

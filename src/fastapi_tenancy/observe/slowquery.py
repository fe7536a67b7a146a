"""The slow-query log: statements slower than ``slow_query_threshold_ms``, with their tenant.

Each slow statement is logged at WARNING on the ``fastapi_tenancy.slow_query`` logger with its
duration, the current tenant and the statement text, and counted. The statement's parameters are
never logged: they carry the tenant's data (and sometimes secrets); the text has placeholders only.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.context import current_tenant_or_none
from fastapi_tenancy.observe.observer import TenancyObserver, handler

__all__ = ["SlowQueryLog"]

logger = logging.getLogger("fastapi_tenancy.slow_query")

# Where a connection keeps the start times of the statements it is running, by cursor: a
# statement's execution may run another one (e.g. a sequence for a default) on another cursor.
_STARTED_KEY = "fastapi_tenancy_statement_started"
# A statement text longer than this is cut in the log: bulk INSERTs can be megabytes long.
MAX_LOGGED_STATEMENT = 4096


class SlowQueryLog(TenancyObserver):
    """Logs and counts the statements of watched engines that run longer than a threshold.

    Example::

        slow = SlowQueryLog(threshold_ms=250)
        slow.watch(engine)
        ...
        slow.count  # slow statements seen so far

    As one of the runtime's observers it watches every engine created (`engine_created`), and it
    reports each slow statement to ``observer`` (``slow_query``: the metrics count it there).
    """

    def __init__(self, threshold_ms: float, *, observer: TenancyObserver | None = None) -> None:
        if threshold_ms < 0:
            raise ValueError(f"threshold_ms must not be negative, not {threshold_ms}")
        self.threshold_ms = threshold_ms
        self._threshold = threshold_ms / 1000
        self._on_slow = handler(observer, "slow_query")
        self.count = 0

    def engine_created(self, engine: AsyncEngine, pool: str = "tenant") -> None:
        self.watch(engine)

    def watch(self, engine: AsyncEngine) -> None:
        """Time every statement ``engine`` runs from now on (its pool may be replaced, too)."""
        target = engine.sync_engine
        event.listen(target, "before_cursor_execute", self._before)
        event.listen(target, "after_cursor_execute", self._after)
        event.listen(target, "handle_error", self._failed)

    def _before(
        self,
        conn: Any,
        cursor: Any,
        _statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        conn.info.setdefault(_STARTED_KEY, {})[id(cursor)] = time.perf_counter()

    def _after(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        started: float | None = conn.info.get(_STARTED_KEY, {}).pop(id(cursor), None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        if elapsed >= self._threshold:
            self._report(statement, elapsed)

    def _failed(self, context: Any) -> None:
        # A failed statement never reaches after_cursor_execute: drop its start time.
        # SQLAlchemy leaves ExceptionContext.cursor unset; the execution context has the cursor
        # (and there is none when the failure came before a statement ran).
        execution = context.execution_context
        cursor = getattr(execution, "cursor", None) if execution is not None else None
        conn = context.connection
        if conn is not None and cursor is not None and not (conn.closed or conn.invalidated):
            conn.info.get(_STARTED_KEY, {}).pop(id(cursor), None)

    def _report(self, statement: str, elapsed: float) -> None:
        self.count += 1
        tenant = current_tenant_or_none()
        statement = statement.strip()
        if len(statement) > MAX_LOGGED_STATEMENT:
            statement = statement[:MAX_LOGGED_STATEMENT] + " ... [truncated]"
        duration_ms = elapsed * 1000
        logger.warning(
            "slow query: %.1f ms (threshold %s ms), tenant %s: %s",
            duration_ms,
            f"{self.threshold_ms:g}",
            tenant.identifier if tenant is not None else "-",
            statement,
            extra={"duration_ms": duration_ms, "statement": statement},
        )
        if self._on_slow is not None:
            self._on_slow(tenant, duration_ms)

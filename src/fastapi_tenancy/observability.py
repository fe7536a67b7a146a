"""Wires the metrics and the slow-query log into every engine a runtime creates.

The central engine is watched when the runtime is built; the per-tenant engines of database
isolation are watched as the engine cache creates them, through its `EngineObserver`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.isolation import IsolationStrategy
from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.slowquery import SlowQueryLog

if TYPE_CHECKING:
    from fastapi_tenancy.metrics import TenancyMetrics

__all__ = ["TenantEngineObserver", "watch_engines"]


class TenantEngineObserver:
    """Watches each new tenant engine and reports the engine cache's size and evictions."""

    def __init__(self, metrics: TenancyMetrics | None, slow_queries: SlowQueryLog | None) -> None:
        self._metrics = metrics
        self._slow_queries = slow_queries

    def engine_created(self, engine: AsyncEngine) -> None:
        if self._metrics is not None:
            self._metrics.watch_pool(engine, "tenant")
        if self._slow_queries is not None:
            self._slow_queries.watch(engine)

    def engines_cached(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.engines_cached(count)

    def engine_evicted(self) -> None:
        if self._metrics is not None:
            self._metrics.engine_evicted()


def watch_engines(
    engine: AsyncEngine,
    isolation: IsolationStrategy,
    *,
    metrics: TenancyMetrics | None,
    slow_queries: SlowQueryLog | None,
) -> None:
    """Attach ``metrics`` and ``slow_queries`` to the central ``engine`` and tenant engines."""
    if metrics is None and slow_queries is None:
        return
    if metrics is not None:
        metrics.watch_pool(engine, "central")
    if slow_queries is not None:
        slow_queries.watch(engine)
    if isinstance(isolation, DatabaseIsolation):
        isolation.engines.observer = TenantEngineObserver(metrics, slow_queries)

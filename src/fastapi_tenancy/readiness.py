"""Readiness: can this process serve requests now? Each dependency checked, timed and reported.

Off the request path: only `fastapi_tenancy.health` runs these checks. The database check has a
connection path of its own (a new connection per check, no pool), so a replica whose pool is
merely busy still reports ready, while a database that refuses new connections does not. Redis
is checked where the configuration uses it, and is *required* only where its failure refuses
requests:

| check | present when | required (its failure makes the process not ready) |
|---|---|---|
| ``database`` | always | yes |
| ``redis_rate_limit`` | rate limiting on Redis | with ``rate_limit_fail_closed`` (the default) |
| ``redis_cache`` | the tenant cache on Redis | no: lookups fall back to memory and the store |

A failed optional dependency leaves the process ready but ``degraded``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.isolation.unavailable import describe, is_unavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from fastapi_tenancy.tenancy import Tenancy

__all__ = ["Check", "Readiness", "ReadinessReport"]

logger = logging.getLogger("fastapi_tenancy")

DEFAULT_TIMEOUT_SECONDS = 5.0

Status = Literal["ok", "unavailable", "error"]


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency: ``ok``, ``unavailable`` (unreachable, refused, timed out) or ``error``.

    ``error`` is a failure that is not an outage, such as a refused login: a misconfiguration.
    """

    status: Status
    required: bool
    latency_ms: float

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "required": self.required,
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(c.status == "ok" for c in self.checks.values() if c.required)

    @property
    def status(self) -> Literal["ok", "degraded", "unavailable"]:
        if not self.ready:
            return "unavailable"
        return "ok" if all(c.status == "ok" for c in self.checks.values()) else "degraded"

    def as_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "checks": {name: check.as_json() for name, check in self.checks.items()},
        }


class Readiness:
    """The readiness checks of one `Tenancy`; its engine opens on first use, `close` disposes it.

    Example::

        report = await tenancy.readiness.check()
        report.ready, report.as_json()
    """

    def __init__(
        self,
        tenancy: Tenancy,
        probe_engine: Callable[[], AsyncEngine],
        *,
        redis_cache: bool = False,
    ) -> None:
        """``probe_engine`` builds the check's own engine (no pool); ``redis_cache``: the tenant
        cache has a Redis layer to check."""
        self._tenancy = tenancy
        self._probe_engine = probe_engine
        self._redis_cache = redis_cache
        self._engine: AsyncEngine | None = None

    async def check(self, seconds: float = DEFAULT_TIMEOUT_SECONDS) -> ReadinessReport:
        """Run every check at once, each bounded by ``seconds``; never raises."""
        tenancy = self._tenancy
        checks: dict[str, tuple[bool, Callable[[], Awaitable[object]]]] = {
            "database": (True, self._database),
        }
        limiter = tenancy.limiter
        if limiter is not None and limiter.shared:
            checks["redis_rate_limit"] = (limiter.fail_closed, self._rate_limit_storage)
        if self._redis_client() is not None:
            checks["redis_cache"] = (False, self._cache)
        results = await asyncio.gather(
            *(_timed(name, required, probe, seconds) for name, (required, probe) in checks.items())
        )
        return ReadinessReport(dict(zip(checks, results, strict=True)))

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def _database(self) -> None:
        tenancy = self._tenancy
        await tenancy.start()
        if self._engine is None:
            self._engine = self._probe_engine()
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _rate_limit_storage(self) -> None:
        limiter = self._tenancy.limiter
        if limiter is not None and not await limiter.storage_ready():
            raise ConnectionError("the rate limit storage does not answer PING")

    async def _cache(self) -> None:
        client = self._redis_client()
        if client is not None:
            await client.ping()

    def _redis_client(self) -> Redis | RedisCluster | None:
        """The Redis client of the tenant cache, when the cache is the Redis-backed one."""
        if not self._redis_cache:
            return None  # redis-py is an optional extra: imported only when Redis is configured
        from fastapi_tenancy.cache.layered import LayeredTenantCache

        cache = self._tenancy.cache
        return cache.redis.client if isinstance(cache, LayeredTenantCache) else None


async def _timed(
    name: str, required: bool, probe: Callable[[], Awaitable[object]], seconds: float
) -> Check:
    started = time.perf_counter()
    status: Status = "ok"
    try:
        async with asyncio.timeout(seconds):
            await probe()
    except TimeoutError:
        status = "unavailable"
        logger.warning("readiness: %s did not answer within %s s", name, seconds)
    except Exception as exc:
        # Redis failures are outages by nature; a database failure may be a misconfiguration.
        outage = name != "database" or is_unavailable(exc)
        status = "unavailable" if outage else "error"
        logger.warning("readiness: %s is %s: %s", name, status, describe(exc))
    return Check(status, required, (time.perf_counter() - started) * 1000)

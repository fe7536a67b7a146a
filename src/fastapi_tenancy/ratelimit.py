"""③ Rate limiting: requests per minute per tenant, in this process or shared through Redis.

Built on the ``limits`` library's moving window: exact counts, and ``Retry-After`` is the real time
until the oldest request in the window leaves it. The limit is ``rate_limit_per_minute``, unless the
tenant's metadata says otherwise (``{"rate_limit_per_minute": 600}``, or ``{"plan": "pro"}`` with
``rate_limit_plans={"pro": 600}``). When the Redis storage fails, ``rate_limit_fail_closed``
decides, explicitly: refuse with 503, or let the request through.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MovingWindowSupport, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import Storage as SyncStorage
from limits.storage import storage_from_string

from fastapi_tenancy._redis import REDIS_SCHEMES, redact_redis_url
from fastapi_tenancy.exceptions import ConfigurationError, RateLimitExceeded, ServiceUnavailable
from fastapi_tenancy.models import Tenant

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from fastapi_tenancy.config import TenancyConfig
    from fastapi_tenancy.observe.observer import TenancyObserver

__all__ = ["RateDecision", "RedisMovingWindow", "TenantRateLimiter"]

logger = logging.getLogger("fastapi_tenancy")

METADATA_LIMIT_KEY = "rate_limit_per_minute"
METADATA_PLAN_KEY = "plan"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """An admitted request's standing: its limit, what is left, and seconds until a slot frees."""

    limit: int
    remaining: int
    reset_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_after).encode()),
        ]


class TenantRateLimiter:
    """Counts each tenant's requests in a moving one-minute window.

    Example::

        limiter = TenantRateLimiter.from_config(TenancyConfig(enable_rate_limiting=True))
        decision = await limiter.check(tenant)   # raises RateLimitExceeded when over the limit
    """

    def __init__(
        self,
        storage_uri: str,
        *,
        per_minute: int,
        plans: dict[str, int] | None = None,
        fail_closed: bool = True,
        timeout: float = 1.0,
        observer: TenancyObserver | None = None,
    ) -> None:
        self._uri = storage_uri
        # Told of every storage failure (``rate_limit_storage_failed``); the metrics count them.
        self.observer = observer
        self._client: Redis | RedisCluster | None = None
        storage: Storage | SyncStorage
        if storage_uri.removeprefix("async+").startswith(REDIS_SCHEMES):
            # Redis of any topology: the library's own client (`fastapi_tenancy._redis`), so the
            # limiter agrees with the cache on URL forms, timeouts, failover and what a failure is.
            from fastapi_tenancy._redis import RedisUrlError, redis_client

            try:
                self._client = redis_client(storage_uri.removeprefix("async+"), timeout=timeout)
            except RedisUrlError as exc:
                raise ConfigurationError(f"rate limit storage cannot be used: {exc}") from exc
            storage = RedisMovingWindow(self._client)
        else:
            try:
                storage = storage_from_string(storage_uri, wrap_exceptions=True)
            except Exception as exc:  # limits raises for an unknown scheme or a missing driver
                raise ConfigurationError(
                    f"rate limit storage {redact_redis_url(storage_uri)} cannot be used: {exc}"
                ) from exc
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._default = RateLimitItemPerMinute(per_minute)
        self._plans = {plan: RateLimitItemPerMinute(n) for plan, n in (plans or {}).items()}
        self._fail_closed = fail_closed
        # Anything but the in-process memory storage lives in a server that can go down.
        self.shared = "memory" not in storage_uri.split("://")[0]
        self._storage_failures = 0

    @classmethod
    def from_config(cls, config: TenancyConfig) -> TenantRateLimiter:
        """The limiter the settings describe (`fastapi_tenancy._wiring.rate_limiter`)."""
        from fastapi_tenancy import _wiring

        return _wiring.rate_limiter(config)

    @property
    def storage_failures(self) -> int:
        """Deprecated (removed in the next release): storage failures, counted.

        Failures are reported to the observer (``TenancyObserver.rate_limit_storage_failed``);
        the metrics count them as ``fastapi_tenancy_rate_limit_storage_failures_total``.
        """
        warnings.warn(
            "TenantRateLimiter.storage_failures is deprecated and goes away in the next release; "
            "override TenancyObserver.rate_limit_storage_failed, or read "
            "fastapi_tenancy_rate_limit_storage_failures_total",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._storage_failures

    @property
    def fail_closed(self) -> bool:
        """Whether a failed storage refuses requests (503) rather than letting them through."""
        return self._fail_closed

    async def storage_ready(self) -> bool:
        """Whether the storage answers (a Redis ``PING``); never raises."""
        healthy = self._storage.check()
        return bool(await healthy if inspect.isawaitable(healthy) else healthy)

    async def close(self) -> None:
        """Close the Redis connections, if any."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def limit_for(self, tenant: Tenant) -> RateLimitItem:
        own = tenant.metadata.get(METADATA_LIMIT_KEY)
        if isinstance(own, int) and not isinstance(own, bool) and own > 0:
            return RateLimitItemPerMinute(own)
        plan = tenant.metadata.get(METADATA_PLAN_KEY)
        if isinstance(plan, str) and plan in self._plans:
            return self._plans[plan]
        return self._default

    async def check(self, tenant: Tenant) -> RateDecision | None:
        """Count one request; ``None`` when the storage failed and the policy lets it through."""
        item = self.limit_for(tenant)
        try:
            admitted = await self._limiter.hit(item, "tenant", tenant.id)
            stats = await self._limiter.get_window_stats(item, "tenant", tenant.id)
        except StorageError as exc:
            self._storage_failures += 1
            logger.warning("rate limit storage %s failed: %s", redact_redis_url(self._uri), exc)
            if self.observer is not None:
                self.observer.rate_limit_storage_failed()
            if self._fail_closed:
                raise ServiceUnavailable("rate limit storage unavailable") from exc
            return None
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        if not admitted:
            raise RateLimitExceeded(limit=item.amount, retry_after=reset_after)
        return RateDecision(limit=item.amount, remaining=stats.remaining, reset_after=reset_after)


# The moving window as ``limits`` keeps it in Redis (a list of hit timestamps, newest first, under
# ``LIMITS:<key>``), so processes of this version and of one that used limits' own Redis storage
# count in the same lists during a rolling upgrade.
KEY_PREFIX = "LIMITS"

# KEYS: the window. ARGV: now, limit, expiry seconds, amount. 1 if admitted.
_ACQUIRE = """
local timestamp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])
if amount > limit then
    return 0
end
local entry = redis.call('LINDEX', KEYS[1], limit - amount)
if entry and tonumber(entry) >= timestamp - expiry then
    return 0
end
for _ = 1, amount do
    redis.call('LPUSH', KEYS[1], timestamp)
end
redis.call('LTRIM', KEYS[1], 0, limit - 1)
redis.call('EXPIRE', KEYS[1], expiry)
return 1
"""

# KEYS: the window. ARGV: the oldest timestamp still inside it, limit. {oldest, count} or {}.
_WINDOW = """
local since = tonumber(ARGV[1])
local entries = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local count = 0
local oldest = nil
for _, entry in ipairs(entries) do
    if tonumber(entry) >= since then
        count = count + 1
        oldest = entry
    else
        break
    end
end
if count == 0 then
    return {}
end
return {oldest, count}
"""


class RedisMovingWindow(Storage, MovingWindowSupport):
    """A ``limits`` moving-window storage on a client from `fastapi_tenancy._redis.redis_client`.

    It works on a single server, a Sentinel master and a Cluster alike (each window is one key,
    so its script runs on one node). The owner closes the client. Redis failures surface as
    ``limits.errors.StorageError``.
    """

    STORAGE_SCHEME = None

    def __init__(self, client: Redis | RedisCluster) -> None:
        super().__init__(wrap_exceptions=True)
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._window = client.register_script(_WINDOW)

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        from fastapi_tenancy._redis import redis_failures

        return tuple(e for e in redis_failures() if issubclass(e, Exception))

    @staticmethod
    def _key(key: str) -> str:
        return f"{KEY_PREFIX}:{key}"

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        admitted = await self._acquire(
            keys=[self._key(key)], args=[time.time(), limit, expiry, amount]
        )
        return bool(admitted)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        window = await self._window(keys=[self._key(key)], args=[now - expiry, limit])
        if window:
            return float(window[0]), int(window[1])
        return now, 0

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("only the moving window is kept in Redis")

    async def get(self, key: str) -> int:
        raise NotImplementedError("only the moving window is kept in Redis")

    async def get_expiry(self, key: str) -> float:
        return max(int(await self._client.ttl(self._key(key))), 0) + time.time()

    async def check(self) -> bool:
        """Whether Redis answers ``PING``; never raises."""
        from fastapi_tenancy._redis import redis_failures

        try:
            return bool(await self._client.ping())
        except redis_failures():
            return False

    async def reset(self) -> int | None:
        raise NotImplementedError("reset would have to scan every node; clear one key instead")

    async def clear(self, key: str) -> None:
        await self._client.delete(self._key(key))

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
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.engines import redact_url
from fastapi_tenancy.exceptions import ConfigurationError, RateLimitExceeded, ServiceUnavailable
from fastapi_tenancy.models import Tenant

__all__ = ["RateDecision", "TenantRateLimiter"]

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
    ) -> None:
        options: dict[str, float | str | bool] = {}
        if "redis" in storage_uri.split("://")[0]:
            # A Redis that stops answering must fail the check within ``timeout``, not hang it.
            options = {
                "implementation": "redispy",
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            }
        try:
            storage = storage_from_string(storage_uri, wrap_exceptions=True, **options)
        except Exception as exc:  # limits raises for an unknown scheme or a missing driver
            raise ConfigurationError(
                f"rate limit storage {redact_url(storage_uri)} cannot be used: {exc}"
            ) from exc
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._default = RateLimitItemPerMinute(per_minute)
        self._plans = {plan: RateLimitItemPerMinute(n) for plan, n in (plans or {}).items()}
        self._fail_closed = fail_closed
        self._uri = storage_uri
        # Anything but the in-process memory storage lives in a server that can go down.
        self.shared = "memory" not in storage_uri.split("://")[0]
        self.storage_failures = 0

    @classmethod
    def from_config(cls, config: TenancyConfig) -> TenantRateLimiter:
        uri = "async+memory://"
        if config.redis_url is not None:
            uri = "async+" + config.redis_url.get_secret_value()
        return cls(
            uri,
            per_minute=config.rate_limit_per_minute,
            plans=config.rate_limit_plans,
            fail_closed=config.rate_limit_fail_closed,
            timeout=config.redis_timeout,
        )

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
        # limits offers no close(); its redis-py bridge owns a client whose pool must be closed.
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
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
            self.storage_failures += 1
            logger.warning("rate limit storage %s failed: %s", redact_url(self._uri), exc)
            if self._fail_closed:
                raise ServiceUnavailable("rate limit storage unavailable") from exc
            return None
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        if not admitted:
            raise RateLimitExceeded(limit=item.amount, retry_after=reset_after)
        return RateDecision(limit=item.amount, remaining=stats.remaining, reset_after=reset_after)

"""`RedisTenantCache`: tenant lookups shared by every process through Redis, the L2 of lookup.

Keys, under a prefix so several apps can share one Redis:

* ``<prefix>:tenant:<identifier>`` holds the tenant as JSON (or ``{"absent": true}``), with a TTL;
* ``<prefix>:gen:<identifier>`` counts the invalidations of the identifier;
* ``<prefix>:invalidate`` is the pub/sub channel on which invalidations are announced.

A process that read the store before an invalidation must not write its stale answer after it.
`read_token` returns the generation before the store is read and `set` writes only if it has not
moved since, atomically in one Lua script.

A tenant with its own ``database_url`` is never written to Redis: the URL carries a password, and
Redis is not where secrets live. Such tenants are cached in process memory only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi_tenancy.cache.base import CachedLookup
from fastapi_tenancy.models import Tenant

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisTenantCache", "redis_client"]

# Every process pays one store read after an invalidation; the counter outlives any sane load.
GENERATION_TTL_SECONDS = 24 * 3600
CLEAR_ALL = "*"

_SET_IF_GENERATION = """
local generation = redis.call('GET', KEYS[2]) or '0'
if generation ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

_ABSENT = '{"absent":true}'


def redis_client(url: str, *, timeout: float) -> Redis:
    """A client whose every command gives up after ``timeout`` seconds instead of hanging."""
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        from fastapi_tenancy.exceptions import ConfigurationError

        raise ConfigurationError(
            "redis_url is set but redis-py is not installed: pip install 'fastapi-tenancy[redis]'"
        ) from exc
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=True,
        # One immediate retry replaces a pooled connection that died with a Redis restart. The
        # default (ten retries with backoff, timeouts too) would hold a request for seconds while
        # Redis is down, where the cache should give up at once and fall back to the store.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


class RedisTenantCache:
    """A `TenantCache` in Redis, shared by every process of the app.

    ``delete`` also announces the invalidation on the channel, so the in-process caches of the
    other processes drop the identifier (see `InvalidationListener`). Redis errors propagate:
    `LayeredTenantCache` decides what a failure means.

    Example::

        cache = RedisTenantCache(redis_client("redis://localhost:6379/0", timeout=1.0))
        await cache.set("acme", tenant, ttl=60)
    """

    def __init__(self, client: Redis, *, prefix: str = "fastapi_tenancy") -> None:
        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}:invalidate"
        self._set_if_generation = client.register_script(_SET_IF_GENERATION)

    def _key(self, identifier: str) -> str:
        return f"{self.prefix}:tenant:{identifier}"

    def _generation_key(self, identifier: str) -> str:
        return f"{self.prefix}:gen:{identifier}"

    async def get(self, identifier: str) -> CachedLookup | None:
        """The cached lookup, or ``None`` on a miss or after its TTL ran out."""
        raw = await self.client.get(self._key(identifier))
        if raw is None:
            return None
        return _decode(raw)

    async def get_with_ttl(self, identifier: str) -> tuple[CachedLookup | None, float]:
        """The cached lookup and the seconds it has left, in one round trip."""
        key = self._key(identifier)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, milliseconds = await pipe.execute()
        if raw is None or milliseconds <= 0:
            return None, 0.0
        return _decode(raw), milliseconds / 1000

    async def read_token(self, identifier: str) -> str:
        """The identifier's generation; pass it to `set` to refuse a write that lost a race."""
        generation = await self.client.get(self._generation_key(identifier))
        return str(generation or "0")

    async def set(
        self, identifier: str, tenant: Tenant | None, *, ttl: float, token: str | None = None
    ) -> None:
        """Cache ``tenant`` (or its absence) for ``ttl`` seconds.

        With ``token`` (from `read_token`), only if no invalidation happened since.
        """
        key = self._key(identifier)
        milliseconds = int(ttl * 1000)
        if milliseconds <= 0 or (tenant is not None and tenant.database_url is not None):
            await self.client.delete(key)
            return
        value = _ABSENT if tenant is None else tenant.model_dump_json()
        if token is None:
            await self.client.set(key, value, px=milliseconds)
            return
        await self._set_if_generation(
            keys=[key, self._generation_key(identifier)], args=[token, value, milliseconds]
        )

    async def delete(self, identifier: str) -> None:
        """Forget ``identifier`` everywhere: here, and in every process's in-memory cache."""
        generation = self._generation_key(identifier)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(identifier))
            pipe.incr(generation)
            pipe.expire(generation, GENERATION_TTL_SECONDS)
            pipe.publish(self.channel, identifier)
            await pipe.execute()

    async def clear(self) -> None:
        """Forget every tenant under this prefix, in Redis and in every process."""
        async for key in self.client.scan_iter(match=f"{self.prefix}:tenant:*", count=500):
            await self.client.delete(key)
        await self.client.publish(self.channel, CLEAR_ALL)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def _decode(raw: str | bytes) -> CachedLookup | None:
    if raw in (_ABSENT, _ABSENT.encode()):
        return CachedLookup(tenant=None)
    try:
        return CachedLookup(Tenant.model_validate_json(raw))
    except ValueError:
        # An entry written by an incompatible version is a miss, never an error or a guess.
        return None

"""`LayeredTenantCache`: process memory (L1) in front of Redis (L2), kept coherent by pub/sub.

* A read tries memory, then Redis; a Redis hit is copied into memory for the time it has left.
* A delete removes the entry from both and announces it, so every other process drops it from
  memory within the pub/sub latency, not after the TTL.
* While Redis is unreachable the cache serves from memory and the store, each failure is logged
  and counted, and memory entries live at most ``degraded_ttl`` seconds: with no invalidations
  arriving, that bound is how long another process's change can take to show. Invalidations that
  could not be announced are retried when Redis answers again; the listener's reconnection turns
  Redis back on, and since messages may have been missed meanwhile, memory is emptied then.
* A failed command makes the listener subscribe afresh (a failover may have moved the server that
  announcements reach first), which again empties memory once the subscription is back.
* Every (re)subscription also checks whether Redis itself restarted or failed over
  (`RedisTenantCache.sync_server`) before lookups use it again: entries restored from a snapshot
  or written to a master that lost them are never served.
* A Redis read that was in flight when an invalidation passed (local or announced) is returned to
  its caller but never copied into memory: an epoch, bumped by every invalidation, is taken before
  the read and compared after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from fastapi_tenancy.cache.base import REDIS_LAYER, CachedLookup, CacheObserver, report_lookup
from fastapi_tenancy.cache.invalidation import InvalidationListener
from fastapi_tenancy.cache.memory import MemoryTenantCache
from fastapi_tenancy.cache.redis import CLEAR_ALL, RedisTenantCache
from fastapi_tenancy.models import Tenant

__all__ = ["LayeredTenantCache"]

logger = logging.getLogger("fastapi_tenancy.cache")


# What a Redis failure can raise: redis-py's errors, and OS-level socket errors it lets through.
REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class LayeredTenantCache:
    """A `TenantCache` over a `MemoryTenantCache` and a `RedisTenantCache`; see the module.

    ``observer`` hears of Redis lookups and failures; give the memory cache the same observer
    for its own lookups.

    ``listeners`` are called with the identifier (``None`` for all) whenever another process
    invalidates something, so the owner can also discard loads in flight.

    Example::

        cache = LayeredTenantCache(MemoryTenantCache(10_000), RedisTenantCache(client))
        await cache.start()            # subscribes to the invalidation channel
        ...
        await cache.close()
    """

    def __init__(
        self,
        memory: MemoryTenantCache,
        redis: RedisTenantCache,
        *,
        observer: CacheObserver | None = None,
        degraded_ttl: float = 1.0,
        retry_seconds: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.memory = memory
        self.redis = redis
        self.listeners: list[Callable[[str | None], None]] = []
        self._observer = observer
        self._degraded_ttl = degraded_ttl
        self._retry_seconds = retry_seconds
        self._timer = timer
        self._channel_up = False
        self._retry_at = 0.0
        self._unannounced: set[str] = set()
        # Bumped by every invalidation; a Redis read copies into memory only if it did not move.
        self._epoch = 0
        self._listener = InvalidationListener(
            redis.client,
            redis.channel,
            on_message=self._on_message,
            on_connected=self._on_channel,
            retry_seconds=retry_seconds,
        )

    @property
    def redis_available(self) -> bool:
        """Whether lookups currently use Redis (subscribed, and no recent command failure)."""
        return self._channel_up and self._timer() >= self._retry_at

    async def start(self) -> None:
        """Subscribe to invalidations, waiting briefly so the first requests already use Redis."""
        await self._listener.start(wait=self._retry_seconds)

    async def get(self, identifier: str) -> CachedLookup | None:
        hit = await self.memory.get(identifier)  # the memory cache reports its own lookups
        if hit is not None:
            return hit
        if not self.redis_available:
            return None
        epoch = self._epoch
        try:
            hit, remaining = await self.redis.get_with_ttl(identifier)
        except REDIS_FAILURES as exc:
            self._failed("read", exc)
            return None
        if self._observer is not None:
            report_lookup(self._observer, REDIS_LAYER, hit)
        if hit is not None and epoch == self._epoch:
            await self.memory.set(identifier, hit.tenant, ttl=self._memory_ttl(remaining))
        await self._announce_pending()
        return hit

    async def read_token(self, identifier: str) -> str | None:
        """Redis's invalidation count for ``identifier``, read before the store; see `set`."""
        if not self.redis_available:
            return None
        try:
            return await self.redis.read_token(identifier)
        except REDIS_FAILURES as exc:
            self._failed("read", exc)
            return None

    async def set(
        self, identifier: str, tenant: Tenant | None, *, ttl: float, token: str | None = None
    ) -> None:
        """Cache in memory and in Redis; with ``token``, Redis only if nothing invalidated since.

        Without a token (Redis was down when the store was read) nothing goes to Redis: the
        answer cannot be proven newer than an invalidation this process did not hear.
        """
        await self.memory.set(identifier, tenant, ttl=self._memory_ttl(ttl))
        if token is None or not self.redis_available:
            return
        try:
            await self.redis.set(identifier, tenant, ttl=ttl, token=token)
        except REDIS_FAILURES as exc:
            self._failed("write", exc)

    async def delete(self, identifier: str) -> None:
        """Forget ``identifier`` here and in Redis, and tell every other process to forget it."""
        self._epoch += 1
        await self.memory.delete(identifier)
        try:
            await self.redis.delete(identifier)
        except REDIS_FAILURES as exc:
            self._unannounced.add(identifier)
            self._failed("invalidation", exc)

    async def clear(self) -> None:
        self._epoch += 1
        await self.memory.clear()
        try:
            await self.redis.clear()
        except REDIS_FAILURES as exc:
            self._unannounced.add(CLEAR_ALL)
            self._failed("invalidation", exc)

    async def close(self) -> None:
        await self._listener.close()
        await self.memory.close()
        await self.redis.close()

    # Pub/sub callbacks, run by the listener task.

    async def _on_message(self, identifier: str) -> None:
        self._epoch += 1
        if identifier == CLEAR_ALL:
            await self.memory.clear()
            self._notify(None)
        else:
            await self.memory.delete(identifier)
            self._notify(identifier)

    async def _on_channel(self, up: bool) -> None:
        # Up: messages may have been missed while down. Down: entries cached while invalidations
        # still arrived would otherwise outlive the degraded TTL. Either way memory starts over.
        self._epoch += 1
        self._channel_up = False
        await self.memory.clear()
        if up and await self.redis.sync_server():
            logger.warning(
                "tenant cache: another Redis process answers (a restart or a failover); every "
                "entry cached before is ignored"
            )
        self._channel_up = up
        self._notify(None)
        if self._observer is not None:
            self._observer.cache_backend_up(REDIS_LAYER, up)
            if not up:
                # A lost subscription is a Redis failure too, whether or not a command also
                # failed: lookups stop using Redis from here on.
                self._observer.cache_backend_error(REDIS_LAYER)
        if up:
            self._retry_at = 0.0
            await self._announce_pending()

    # Helpers.

    def _memory_ttl(self, ttl: float) -> float:
        return ttl if self._channel_up else min(ttl, self._degraded_ttl)

    def _notify(self, identifier: str | None) -> None:
        for listener in self.listeners:
            listener(identifier)

    def _failed(self, operation: str, exc: BaseException) -> None:
        first = self._timer() >= self._retry_at
        self._retry_at = self._timer() + self._retry_seconds
        if self._observer is not None:
            self._observer.cache_backend_error(REDIS_LAYER)
        if first:
            # After a failover the subscription may sit on a server that no longer receives
            # announcements first; subscribing afresh also empties memory (see _on_channel).
            self._listener.resubscribe()
            logger.warning(
                "tenant cache: Redis %s failed (%s: %s); serving from memory and the store, "
                "retrying in %.0f s",
                operation,
                type(exc).__name__,
                exc,
                self._retry_seconds,
            )

    async def _announce_pending(self) -> None:
        while self._unannounced:
            identifier = self._unannounced.pop()
            try:
                if identifier == CLEAR_ALL:
                    await self.redis.clear()
                else:
                    await self.redis.delete(identifier)
            except REDIS_FAILURES as exc:
                self._unannounced.add(identifier)
                self._failed("invalidation", exc)
                return

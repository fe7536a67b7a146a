"""Redis caches for the tests, each under a prefix of its own on the test Redis server."""

from __future__ import annotations

import uuid

from fastapi_tenancy.cache.layered import LayeredTenantCache
from fastapi_tenancy.cache.redis import RedisTenantCache, redis_client
from tests.support.polling import eventually
from tests.support.services import REDIS_URL, require_server


def redis_cache(
    url: str = REDIS_URL, prefix: str | None = None, *, timeout: float = 1.0
) -> RedisTenantCache:
    """A cache on ``url`` whose keys no other test (or parallel run) shares, unless ``prefix``.

    ``timeout`` is the library's default; a test that counts store reads raises it, since on a
    loaded machine a Redis timeout legitimately makes a process read the store once more.
    """
    if url == REDIS_URL:  # private servers and dead ports are the test's own business
        require_server("Redis", url, 6379)
    return RedisTenantCache(
        redis_client(url, timeout=timeout), prefix=prefix or f"tt-{uuid.uuid4().hex[:12]}"
    )


async def start_subscribed(cache: LayeredTenantCache) -> LayeredTenantCache:
    """Start ``cache`` and wait until its invalidation subscription is confirmed.

    ``start`` waits a second at most. On a loaded machine the confirmation can come later, in
    the middle of a test, and it empties memory (as it must: messages may have been missed), so
    a test that relies on what it put in memory starts once the cache is subscribed.
    """
    await cache.start()
    await eventually(lambda: cache.redis_available, within=30, what="the cache's subscription")
    return cache

"""Redis caches for the tests, each under a prefix of its own on the test Redis server."""

from __future__ import annotations

import uuid

from fastapi_tenancy.cache.redis import RedisTenantCache, redis_client
from tests.support.services import REDIS_URL, require_server


def redis_cache(url: str = REDIS_URL, prefix: str | None = None) -> RedisTenantCache:
    """A cache on ``url`` whose keys no other test (or parallel run) shares, unless ``prefix``."""
    if url == REDIS_URL:  # private servers and dead ports are the test's own business
        require_server("Redis", url, 6379)
    return RedisTenantCache(
        redis_client(url, timeout=1.0), prefix=prefix or f"tt-{uuid.uuid4().hex[:12]}"
    )

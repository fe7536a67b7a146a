"""The cache a config asks for: none, process memory, or memory in front of Redis."""

from __future__ import annotations

from fastapi_tenancy.cache.base import CacheObserver, TenantCache
from fastapi_tenancy.cache.memory import MemoryTenantCache
from fastapi_tenancy.config import TenancyConfig

__all__ = ["build_cache"]


def build_cache(config: TenancyConfig, observer: CacheObserver | None = None) -> TenantCache | None:
    """``None`` when caching is off; a `LayeredTenantCache` when ``redis_url`` is set."""
    if not config.cache_enabled:
        return None
    memory = MemoryTenantCache(config.cache_max_size, observer=observer)
    if config.redis_url is None:
        return memory
    # Imported here: redis-py is an optional extra, needed only when Redis is configured.
    from fastapi_tenancy.cache.redis import RedisTenantCache, redis_client

    client = redis_client(config.redis_url.get_secret_value(), timeout=config.redis_timeout)
    from fastapi_tenancy.cache.layered import LayeredTenantCache

    return LayeredTenantCache(
        memory, RedisTenantCache(client, prefix=config.cache_key_prefix), observer=observer
    )

"""The `TenantCache` contract: one set of tests run over every cache implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from fastapi_tenancy.cache import CachedLookup, MemoryTenantCache, TenantCache
from fastapi_tenancy.models import Tenant
from tests.support.redis_cache import redis_cache, start_subscribed
from tests.support.services import REDIS_URL

ACME = Tenant(identifier="acme", name="Acme", metadata={"plan": "pro"})
GLOBEX = Tenant(identifier="globex")


class ManualClock:
    """A time source that moves only when told to, so TTL tests never sleep."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CacheBackend:
    """How the tests drive one implementation: build a cache, let time pass."""

    build: Callable[[int], Awaitable[TenantCache]]
    advance: Callable[[float], Awaitable[None]]
    # Whether max_size bounds the cache; Redis bounds its memory with its own maxmemory policy.
    bounded: bool = True
    opened: list[TenantCache] = field(default_factory=list)

    async def new(self, max_size: int = 100) -> TenantCache:
        cache = await self.build(max_size)
        self.opened.append(cache)
        return cache


def memory_backend() -> CacheBackend:
    clock = ManualClock()

    async def advance(seconds: float) -> None:
        clock.now += seconds

    async def build(max_size: int) -> TenantCache:
        return MemoryTenantCache(max_size, timer=clock)

    return CacheBackend(build, advance)


def redis_backend(url: str = REDIS_URL) -> CacheBackend:
    # Redis keeps time itself, so the clock is the real one; the TTLs in these tests are short.
    async def build(_max_size: int) -> TenantCache:
        return redis_cache(url)

    return CacheBackend(build, asyncio.sleep, bounded=False)


def layered_backend(url: str = REDIS_URL) -> CacheBackend:
    async def build(max_size: int) -> TenantCache:
        from fastapi_tenancy.cache.layered import LayeredTenantCache

        return await start_subscribed(
            LayeredTenantCache(MemoryTenantCache(max_size), redis_cache(url))
        )

    return CacheBackend(build, asyncio.sleep, bounded=False)


# name: (how to build it, the fixture whose ``url`` it runs on, or None for the test Redis).
BACKENDS: dict[str, tuple[Callable[..., CacheBackend], str | None]] = {
    "memory": (memory_backend, None),
    "redis": (redis_backend, None),
    "layered": (layered_backend, None),
    "redis-sentinel": (redis_backend, "redis_sentinel"),
    "layered-sentinel": (layered_backend, "redis_sentinel"),
    "redis-cluster": (redis_backend, "redis_cluster"),
    "layered-cluster": (layered_backend, "redis_cluster"),
}


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("layered", id="layered", marks=pytest.mark.redis),
        pytest.param("redis-sentinel", id="redis-sentinel", marks=pytest.mark.redis_sentinel),
        pytest.param("layered-sentinel", id="layered-sentinel", marks=pytest.mark.redis_sentinel),
        pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis_cluster),
        pytest.param("layered-cluster", id="layered-cluster", marks=pytest.mark.redis_cluster),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[CacheBackend]:
    build, topology = BACKENDS[request.param]
    backend = build() if topology is None else build(request.getfixturevalue(topology).url)
    yield backend
    for cache in backend.opened:
        await cache.clear()
        await cache.close()


@pytest.fixture
async def cache(backend: CacheBackend) -> TenantCache:
    return await backend.new()


async def test_unknown_identifier_is_a_miss(cache: TenantCache) -> None:
    assert await cache.get("acme") is None


async def test_cached_tenant_is_a_hit(cache: TenantCache) -> None:
    await cache.set("acme", ACME, ttl=60)

    assert await cache.get("acme") == CachedLookup(ACME)
    assert await cache.get("globex") is None


async def test_cached_absence_is_a_negative_hit(cache: TenantCache) -> None:
    await cache.set("nobody", None, ttl=5)

    assert await cache.get("nobody") == CachedLookup(tenant=None)


async def test_entries_expire_after_their_own_ttl(backend: CacheBackend) -> None:
    cache = await backend.new()
    await cache.set("acme", ACME, ttl=0.4)
    await cache.set("nobody", None, ttl=0.2)

    await backend.advance(0.1)
    assert await cache.get("acme") == CachedLookup(ACME)
    assert await cache.get("nobody") == CachedLookup(None)

    await backend.advance(0.2)
    assert await cache.get("acme") == CachedLookup(ACME)
    assert await cache.get("nobody") is None

    await backend.advance(0.2)
    assert await cache.get("acme") is None


async def test_delete_forgets_one_identifier(cache: TenantCache) -> None:
    await cache.set("acme", ACME, ttl=60)
    await cache.set("globex", GLOBEX, ttl=60)

    await cache.delete("acme")
    await cache.delete("never-cached")

    assert await cache.get("acme") is None
    assert await cache.get("globex") == CachedLookup(GLOBEX)


async def test_clear_forgets_everything(cache: TenantCache) -> None:
    await cache.set("acme", ACME, ttl=60)
    await cache.set("nobody", None, ttl=60)

    await cache.clear()

    assert await cache.get("acme") is None
    assert await cache.get("nobody") is None


async def test_least_recently_used_entry_is_evicted_at_max_size(backend: CacheBackend) -> None:
    if not backend.bounded:
        pytest.skip("Redis bounds its memory with its own maxmemory policy, not max_size")
    cache = await backend.new(max_size=2)
    await cache.set("acme", ACME, ttl=60)
    await cache.set("globex", GLOBEX, ttl=60)
    assert await cache.get("acme") is not None  # acme is now the most recently used

    await cache.set("nobody", None, ttl=60)

    assert await cache.get("globex") is None
    assert await cache.get("acme") == CachedLookup(ACME)
    assert await cache.get("nobody") == CachedLookup(None)


async def test_set_overwrites_the_entry_and_its_ttl(backend: CacheBackend) -> None:
    cache = await backend.new()
    await cache.set("acme", None, ttl=0.2)

    await cache.set("acme", ACME, ttl=0.6)
    await backend.advance(0.4)

    assert await cache.get("acme") == CachedLookup(ACME)


async def test_zero_ttl_caches_nothing_and_drops_the_old_entry(cache: TenantCache) -> None:
    await cache.set("acme", ACME, ttl=60)

    await cache.set("acme", None, ttl=0)

    assert await cache.get("acme") is None

"""Memory in front of Redis: invalidation across processes, races, secrets, and Redis outages."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from pydantic import SecretStr

from fastapi_tenancy.cache import CachedLookup, MemoryTenantCache
from fastapi_tenancy.cache.layered import LayeredTenantCache
from fastapi_tenancy.models import Tenant
from tests.cache.test_contract import ManualClock
from tests.support.polling import eventually
from tests.support.redis_cache import redis_cache, start_subscribed
from tests.support.redis_server import PrivateRedis
from tests.support.services import REDIS_URL

pytestmark = pytest.mark.redis

ACME = Tenant(identifier="acme", name="Acme")


class CountingObserver:
    """Records what the cache reports, as the metrics would."""

    def __init__(self) -> None:
        self.lookups: list[tuple[str, str]] = []
        self.errors = 0
        self.up: list[bool] = []

    def cache_lookup(self, layer: str, result: str) -> None:
        self.lookups.append((layer, result))

    def cache_backend_error(self, layer: str) -> None:
        self.errors += 1

    def cache_backend_up(self, layer: str, up: bool) -> None:
        self.up.append(up)


@asynccontextmanager
async def layered(
    url: str = REDIS_URL, prefix: str | None = None, **options: object
) -> AsyncIterator[LayeredTenantCache]:
    """A started layered cache: one "process" of the app, wired as `_wiring.cache` wires it."""
    memory = options.pop("memory", None)
    if not isinstance(memory, MemoryTenantCache):
        observer = options.get("observer")
        memory = MemoryTenantCache(100, observer=observer)  # type: ignore[arg-type]
    subscribe = options.pop("subscribed", True)
    cache = LayeredTenantCache(
        memory,
        redis_cache(url, prefix),
        **options,  # type: ignore[arg-type]
    )
    if subscribe:
        await start_subscribed(cache)
    else:
        await cache.start()
    try:
        yield cache
    finally:
        await cache.clear()
        await cache.close()


async def test_delete_in_one_process_empties_the_memory_of_every_other() -> None:
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with layered(prefix=prefix) as first, layered(prefix=prefix) as second:
        heard: list[str | None] = []
        second.listeners.append(heard.append)
        await first.set("acme", ACME, ttl=60, token=await first.read_token("acme"))
        assert await second.get("acme") == CachedLookup(ACME)  # now in second's memory too

        await first.delete("acme")

        async def second_forgot() -> bool:
            return await second.memory.get("acme") is None

        await eventually(second_forgot)
        assert heard == ["acme"]  # the announcement emptied it, not an expiry
        assert await second.get("acme") is None


async def test_a_store_read_older_than_an_invalidation_is_never_cached_in_redis() -> None:
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with layered(prefix=prefix) as slow, layered(prefix=prefix) as other:
        token = await slow.read_token("acme")  # slow process starts its store read
        await other.delete("acme")  # meanwhile the tenant changes and is invalidated

        await slow.set("acme", ACME, ttl=60, token=token)  # the stale answer arrives

        assert await slow.redis.get("acme") is None
        assert await other.get("acme") is None


async def test_a_tenant_with_its_own_database_url_stays_out_of_redis() -> None:
    tenant = Tenant(identifier="acme", database_url=SecretStr("postgresql://u:pw@db/acme"))
    async with layered() as cache:
        await cache.set("acme", tenant, ttl=60, token=await cache.read_token("acme"))

        assert await cache.redis.get("acme") is None
        assert await cache.redis.client.keys(f"{cache.redis.prefix}:tenant:*") == []
        assert await cache.get("acme") == CachedLookup(tenant)  # from memory


async def test_lookups_are_reported_per_layer() -> None:
    observer = CountingObserver()
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with layered(prefix=prefix, observer=observer) as cache, layered(prefix=prefix) as peer:
        await peer.set("acme", ACME, ttl=60, token=await peer.read_token("acme"))
        await peer.set("nobody", None, ttl=60, token=await peer.read_token("nobody"))

        await cache.get("acme")  # memory miss, Redis hit
        await cache.get("acme")  # memory hit
        await cache.get("nobody")  # memory miss, Redis negative hit
        await cache.get("other")  # miss everywhere

    assert observer.lookups == [
        ("memory", "miss"),
        ("redis", "hit"),
        ("memory", "hit"),
        ("memory", "miss"),
        ("redis", "negative_hit"),
        ("memory", "miss"),
        ("redis", "miss"),
    ]
    assert observer.up == [True]


async def test_redis_outage_falls_back_to_memory_then_resumes_on_its_own(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    observer = CountingObserver()
    clock = ManualClock()
    memory = MemoryTenantCache(100, timer=clock)
    async with layered(private_redis.url, observer=observer, memory=memory) as cache:
        await cache.set("acme", ACME, ttl=60, token=await cache.read_token("acme"))
        assert cache.redis_available

        await private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="fastapi_tenancy.cache"):

            async def outage_seen() -> bool:
                return not cache.redis_available

            await eventually(outage_seen)
            assert observer.errors == 1  # the lost subscription counts, before any command fails
            # Serving goes on: reads miss instead of raising, writes stay in memory.
            assert await cache.get("acme") is None  # memory was emptied when the channel went
            await cache.set("acme", ACME, ttl=60, token=await cache.read_token("acme"))
            assert await cache.get("acme") == CachedLookup(ACME)
            await cache.delete("globex")  # cannot be announced now; retried later
        assert any("Redis" in r.getMessage() for r in caplog.records)
        assert observer.up[-1] is False
        assert observer.errors >= 1

        # With no invalidations arriving, memory keeps entries for one second at most.
        clock.now += 1.5
        assert await cache.memory.get("acme") is None

        await private_redis.start()

        async def resumed() -> bool:
            return cache.redis_available

        await eventually(resumed)
        assert observer.up[-1] is True
        await cache.set("acme", ACME, ttl=60, token=await cache.read_token("acme"))
        assert await cache.redis.get("acme") == CachedLookup(ACME)
        # the pending invalidation went out
        assert (await cache.redis.read_token("globex")).startswith("1@")


async def test_redis_down_at_start_still_serves_from_memory() -> None:
    # Nothing listens on this port: connection refused from the first command on.
    async with layered("redis://127.0.0.1:9/0", retry_seconds=0.05, subscribed=False) as cache:
        assert not cache.redis_available
        assert await cache.read_token("acme") is None
        await cache.set("acme", ACME, ttl=60, token=None)
        assert await cache.get("acme") == CachedLookup(ACME)

"""No stale tenant after Redis trouble: in-flight reads, restarts from a snapshot, quick reconnects.

Each case is a way for an invalidated (for instance suspended) tenant to reach process memory or be
read back from Redis after the invalidation passed:

* a Redis read in flight while the invalidation passes must not be copied into memory;
* a Redis restarted from a snapshot restores entries and generation counters from before the
  invalidation: no process, old or fresh, may serve them;
* a pub/sub connection that redis-py re-establishes on its own may have missed messages: memory
  is emptied on every (re)subscription.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fastapi_tenancy import Tenancy, TenantStatus
from fastapi_tenancy.cache import CachedLookup, MemoryTenantCache
from fastapi_tenancy.cache.layered import LayeredTenantCache
from fastapi_tenancy.cache.redis import RedisTenantCache, redis_client
from fastapi_tenancy.exceptions import TenantSuspended
from fastapi_tenancy.models import Tenant
from tests.cache.test_layered import CountingObserver, layered
from tests.support.backends import isolation_config
from tests.support.polling import eventually
from tests.support.redis_cache import start_subscribed
from tests.support.redis_server import PrivateRedis
from tests.support.services import REDIS_URL, require_server

pytestmark = pytest.mark.redis

ACME = Tenant(identifier="acme", name="Acme")


class PausingRedisCache(RedisTenantCache):
    """A real Redis cache whose reads, once ``pause`` is set, stop after Redis answered.

    ``read_done`` is set when a read has its answer; the read returns when ``release`` is set.
    """

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(redis_client(url, timeout=1.0), prefix=prefix)
        self.pause = False
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def get_with_ttl(self, identifier: str) -> tuple[CachedLookup | None, float]:
        answer = await super().get_with_ttl(identifier)
        if self.pause:
            self.read_done.set()
            await self.release.wait()
        return answer


@asynccontextmanager
async def pausing(prefix: str) -> AsyncIterator[LayeredTenantCache]:
    cache = LayeredTenantCache(MemoryTenantCache(100), PausingRedisCache(REDIS_URL, prefix))
    await start_subscribed(cache)
    try:
        yield cache
    finally:
        await cache.close()


@pytest.mark.parametrize("where", ["this-process", "another-process"])
async def test_a_redis_read_in_flight_during_an_invalidation_is_not_cached_in_memory(
    where: str,
) -> None:
    require_server("Redis", REDIS_URL, 6379)
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with layered(prefix=prefix) as other, pausing(prefix) as cache:
        heard: list[str | None] = []
        cache.listeners.append(heard.append)
        await other.set("acme", ACME, ttl=60, token=await other.read_token("acme"))
        redis = cache.redis
        assert isinstance(redis, PausingRedisCache)
        redis.pause = True
        read = asyncio.create_task(cache.get("acme"))
        await redis.read_done.wait()  # Redis answered "active"; the answer is not used yet

        if where == "this-process":
            await cache.delete("acme")
        else:
            await other.delete("acme")

            async def announced() -> bool:
                return heard == ["acme"]

            await eventually(announced)
        redis.release.set()

        assert await read == CachedLookup(ACME)  # the caller that asked before gets its answer
        redis.pause = False
        assert await cache.memory.get("acme") is None
        assert await cache.get("acme") is None


async def test_a_redis_restored_from_a_snapshot_never_serves_a_suspended_tenant(
    tmp_path: Path,
) -> None:
    async with PrivateRedis(snapshot_dir=tmp_path) as server:
        config = isolation_config(
            ("row", f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"),
            redis_url=server.url,
            cache_ttl=3600,
        )
        admin = Redis.from_url(server.url, decode_responses=True)
        try:
            async with Tenancy(config) as running:
                await running.create_tenant("acme")
                assert (await running.lookup.get_active("acme")).status is TenantStatus.ACTIVE
                key = f"{config.cache_key_prefix}:tenant:acme"
                assert await admin.exists(key) == 1
                await admin.save()  # the snapshot holds acme as active
                await running.suspend_tenant("acme")
                assert await admin.exists(key) == 0

                await server.stop()  # crash: the suspension's invalidation is not in the snapshot
                await server.start()
                await admin.aclose()
                admin = Redis.from_url(server.url, decode_responses=True)
                assert await admin.exists(key) == 1  # the stale entry is back

                cache = running.cache
                assert isinstance(cache, LayeredTenantCache)

                async def resubscribed() -> bool:
                    return cache.redis_available

                await eventually(resubscribed)
                # The process that lived through the restart...
                with pytest.raises(TenantSuspended):
                    await running.lookup.get_active("acme")
                # ...and a process started after it.
                async with Tenancy(config) as fresh:
                    with pytest.raises(TenantSuspended):
                        await fresh.lookup.get_active("acme")
        finally:
            await admin.aclose()


async def test_a_write_read_before_a_redis_restart_is_refused_after_it(tmp_path: Path) -> None:
    async with PrivateRedis(snapshot_dir=tmp_path) as server:
        cache = RedisTenantCache(redis_client(server.url, timeout=1.0), prefix="stale")
        try:
            await cache.sync_server()
            await cache.client.save()
            token = await cache.read_token("acme")  # a store read starts before the crash
            await server.stop()
            await server.start()
            assert await cache.sync_server() is True

            await cache.set("acme", ACME, ttl=60, token=token)

            assert await cache.get("acme") is None
        finally:
            await cache.close()


async def test_a_pubsub_connection_that_redis_py_reconnects_on_its_own_empties_memory(
    private_redis: PrivateRedis,
) -> None:
    observer = CountingObserver()
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with layered(private_redis.url, prefix, observer=observer) as cache:
        await cache.set("acme", ACME, ttl=60, token=await cache.read_token("acme"))
        assert await cache.memory.get("acme") == CachedLookup(ACME)
        assert observer.up == [True]

        admin = Redis.from_url(private_redis.url)
        try:
            killed = await admin.client_kill_filter(_type="pubsub")
        finally:
            await admin.aclose()
        assert killed == 1

        async def resubscribed() -> bool:
            # Usually redis-py reconnects silently ([True, True]); on a loaded machine the
            # listener may see the cut first ([True, False, True]). Memory must be empty either way.
            return len(observer.up) >= 2 and observer.up[-1]

        await eventually(resubscribed)
        assert await cache.memory.get("acme") is None
        assert cache.redis_available


async def test_an_update_reaches_the_memory_of_another_process(tmp_path: Path) -> None:
    require_server("Redis", REDIS_URL, 6379)
    config = isolation_config(
        ("row", f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"),
        redis_url=REDIS_URL,
        cache_key_prefix=f"tt-{uuid.uuid4().hex[:12]}",
        cache_ttl=3600,  # only the invalidation can make the other process see the change
    )
    async with Tenancy(config) as admin, Tenancy(config) as app:
        await admin.create_tenant("acme", metadata={"plan": "free"})
        assert (await app.lookup.get_active("acme")).metadata == {"plan": "free"}
        cache = app.cache
        assert isinstance(cache, LayeredTenantCache)
        assert await cache.memory.get("acme") is not None  # served from memory from now on

        await admin.update_tenant("acme", metadata={"plan": "pro", "rate_limit": 600})

        async def sees_the_new_plan() -> bool:
            return bool((await app.lookup.get_active("acme")).metadata["plan"] == "pro")

        await eventually(sees_the_new_plan)
        assert (await app.lookup.get_active("acme")).metadata == {"plan": "pro", "rate_limit": 600}
        await cache.clear()

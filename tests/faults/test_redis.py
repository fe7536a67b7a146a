"""Redis stopped mid-traffic, and started again, without restarting the app.

Each test runs its own ``redis-server`` (`PrivateRedis`) and kills it; the shared Redis is never
touched. Tenant data lives in the test PostgreSQL database, so every response is still checked
for other tenants' rows.

* Rate limiting with ``rate_limit_fail_closed=True``: 503 while Redis is down, normal service
  once it is back.
* With ``rate_limit_fail_closed=False``: requests pass while Redis is down.
* The tenant cache (memory in front of Redis): lookups fall back to memory and the store while
  Redis is down, and the cache writes to Redis again on its own once it is back.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.cache.layered import LayeredTenantCache
from tests.support.backends import isolation_config
from tests.support.faults import GENERIC_503, Running, running
from tests.support.polling import eventually
from tests.support.redis_server import PrivateRedis

TENANTS = ["redisalpha", "redisbravo"]
# Recovery is waited for in short steps, never with a fixed delay: reconnecting takes as long as
# the client's retry interval, and the bound only keeps a broken recovery from hanging the test.

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("isolation_case", [("row", "postgres")], indirect=True),
]


@pytest.fixture
def redis(private_redis: PrivateRedis) -> PrivateRedis:
    return private_redis


def config(case: tuple[str, str], redis: PrivateRedis, **overrides: Any) -> TenancyConfig:
    return isolation_config(case, redis_url=redis.url, **overrides)


async def served(service: Running, identifier: str) -> bool:
    return await service.statuses(identifier) == [200]


async def test_fail_closed_rate_limiting_answers_503_while_redis_is_down_then_recovers(
    isolation_case: tuple[str, str], redis: PrivateRedis
) -> None:
    settings = config(
        isolation_case,
        redis,
        enable_rate_limiting=True,
        rate_limit_fail_closed=True,
        enable_metrics=True,
    )
    async with running(settings, TENANTS) as service:
        assert await service.statuses("redisalpha", 2) == [200, 200]

        await redis.stop()

        for identifier in TENANTS:
            refused = await service.get(identifier)
            assert refused.status_code == 503
            assert refused.json() == GENERIC_503
        metrics = service.tenancy.metrics
        assert metrics is not None
        assert metrics.registry is not None
        failed = metrics.registry.get_sample_value(
            "fastapi_tenancy_rate_limit_storage_failures_total"
        )
        assert failed is not None
        assert failed >= len(TENANTS)

        await redis.start()

        await eventually(lambda: served(service, "redisalpha"))
        assert await service.statuses("redisbravo", 2) == [200, 200]
        admitted = await service.get("redisbravo")
        assert "ratelimit-remaining" in admitted.headers  # counted in Redis again


async def test_fail_open_rate_limiting_lets_requests_through_while_redis_is_down(
    isolation_case: tuple[str, str], redis: PrivateRedis
) -> None:
    settings = config(
        isolation_case, redis, enable_rate_limiting=True, rate_limit_fail_closed=False
    )
    async with running(settings, TENANTS) as service:
        assert await service.statuses("redisalpha") == [200]

        await redis.stop()

        for identifier in TENANTS:
            assert await service.statuses(identifier, 2) == [200, 200]
            assert (await service.post(identifier, "redis-down")).status_code == 200

        await redis.start()

        await eventually(
            lambda: _has_rate_limit_headers(service, "redisalpha"),
        )


async def _has_rate_limit_headers(service: Running, identifier: str) -> bool:
    response = await service.get(identifier)
    return response.status_code == 200 and "ratelimit-remaining" in response.headers


async def test_tenant_cache_falls_back_to_memory_and_store_while_redis_is_down(
    isolation_case: tuple[str, str], redis: PrivateRedis
) -> None:
    async with running(config(isolation_case, redis), TENANTS) as service:
        cache = service.tenancy.cache
        assert isinstance(cache, LayeredTenantCache)
        key = f"{cache.redis.prefix}:tenant:redisalpha"
        assert await service.statuses("redisalpha") == [200]
        assert await redis_has(redis, key)

        await redis.stop()

        for identifier in TENANTS:
            # Warm or cold, each lookup is answered from memory or the store.
            await service.tenancy.lookup.invalidate(identifier)
            assert await service.statuses(identifier, 2) == [200, 200]
        assert not cache.redis_available

        await redis.start()

        async def written_to_redis_again() -> bool:
            # The restarted server is empty: a key proves the cache uses Redis again.
            await service.tenancy.lookup.invalidate("redisalpha")
            assert await service.statuses("redisalpha") == [200]
            return await redis_has(redis, key)

        await eventually(written_to_redis_again)
        assert cache.redis_available


async def redis_has(redis: PrivateRedis, key: str) -> bool:
    client = Redis.from_url(redis.url)
    try:
        return bool(await client.exists(key))
    finally:
        await client.aclose()

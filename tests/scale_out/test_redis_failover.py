"""Two worker processes on a Redis Sentinel group or Cluster ride out a failover mid-traffic.

Each test starts its own topology on loopback (tests/support/redis_topologies.py), two ``uvicorn``
workers sharing it and PostgreSQL, and keeps both workers busy while the master fails over. Then:
no request ever got a 500; both workers recover on their own; a suspension made through one is
seen by the other quickly (through the invalidation channel, not after the cache TTL); a limit of
N still admits exactly N across both.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.conftest import empty_database
from tests.scale_out.test_workers import worker
from tests.support.polling import eventually
from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelGroup

pytestmark = [pytest.mark.postgres]

LIMIT = 7
# The cache TTL is far longer than any bound below: a suspension seen within the bound travelled
# through the invalidation channel, it did not wait for an entry to expire.
CACHE_TTL = 300
# A generous bound for a loaded 2-core machine; the time measured is printed (docs/scaling-out.md).
PROPAGATION_BOUND_SECONDS = 5.0


@dataclass
class Fleet:
    first: httpx.AsyncClient
    second: httpx.AsyncClient
    prefix: str

    @property
    def both(self) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        return self.first, self.second


@asynccontextmanager
async def fleet(redis_url: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    """Two workers on ``redis_url`` and a fresh PostgreSQL database, with three tenants."""
    async with empty_database("postgres", tmp_path) as database_url:
        prefix = f"tt-{uuid.uuid4().hex[:12]}"
        config = TenancyConfig(
            database_url=database_url,
            redis_url=SecretStr(redis_url),
            cache_key_prefix=prefix,
            cache_ttl=CACHE_TTL,
            tenant_tables="none",  # the app keeps no tenant tables
            enable_rate_limiting=True,
            excluded_paths=("/health/*", "/admin/*"),
        )
        settings = {
            "TENANCY_DATABASE_URL": database_url,
            "TENANCY_REDIS_URL": redis_url,
            "TENANCY_CACHE_KEY_PREFIX": prefix,
            "TENANCY_CACHE_TTL": str(CACHE_TTL),
            "TENANCY_TENANT_TABLES": "none",
            "TENANCY_ENABLE_RATE_LIMITING": "true",
            "TENANCY_EXCLUDED_PATHS": "/health/*,/admin/*",
        }
        async with Tenancy(config) as tenancy:
            await tenancy.create_tenant("busy", metadata={"rate_limit_per_minute": 1_000_000})
            await tenancy.create_tenant("globex", metadata={"rate_limit_per_minute": 1_000_000})
            await tenancy.create_tenant("limited", metadata={"rate_limit_per_minute": LIMIT})
        env = {**os.environ, **settings}
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(worker(env, tmp_path / "first.log"))
            second = await stack.enter_async_context(worker(env, tmp_path / "second.log"))
            yield Fleet(first, second, prefix)


async def traffic(fleet: Fleet, statuses: Counter[int], stop: asyncio.Event) -> None:
    """Both workers, back to back, for two tenants, until ``stop``; every status is counted."""
    while not stop.is_set():
        for client in fleet.both:
            for tenant in ("busy", "globex"):
                response = await client.get("/whoami", headers={"X-Tenant-ID": tenant})
                statuses[response.status_code] += 1
        await asyncio.sleep(0.005)


async def recovered(fleet: Fleet) -> bool:
    """Both workers admit through the (fail-closed) Redis rate limiter again."""
    for client in fleet.both:
        response = await client.get("/whoami", headers={"X-Tenant-ID": "busy"})
        if response.status_code != 200:
            return False
    return True


async def ride_out(
    fleet: Fleet,
    fail: Callable[[], float],
    what: str,
    *,
    settled: Callable[[], bool] = lambda: True,
) -> None:
    """Fail over under traffic, then check recovery, propagation and the shared limit.

    ``settled`` tells when no process talks to the old master any more (which a live old master
    allows for a while after the failover).
    """
    globex = {"X-Tenant-ID": "globex"}
    for client in fleet.both:  # both workers hold globex in memory
        assert (await client.get("/whoami", headers=globex)).status_code == 200

    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(fleet, statuses, stop))
    loop = asyncio.get_running_loop()
    try:
        await eventually(lambda: statuses[200] > 0, what="traffic before the failure")
        started = loop.time()
        promoted = await asyncio.to_thread(fail)
        await eventually(lambda: recovered(fleet), within=60, what="recovery after the failover")
        recovery = loop.time() - started
        await eventually(settled, within=60, what="the workers to leave the old master")
        settling = loop.time() - started
        served = statuses[200]
        await eventually(lambda: statuses[200] > served, what="traffic after the failover")
    finally:
        stop.set()
        await load

    assert statuses[500] == 0, f"500s during the failover: {dict(statuses)}"
    assert set(statuses) <= {200, 503}, dict(statuses)
    assert statuses[200] > 0

    # A suspension through one worker reaches the other through the invalidation channel.
    assert (await fleet.second.get("/whoami", headers=globex)).status_code == 200
    suspended = await fleet.first.post("/admin/tenants/globex/suspend")
    assert suspended.json() == {"status": "suspended"}
    started = loop.time()
    while (await fleet.second.get("/whoami", headers=globex)).status_code == 200:
        assert loop.time() - started < PROPAGATION_BOUND_SECONDS, "the suspension never arrived"
        await asyncio.sleep(0.01)
    propagation = loop.time() - started

    # The shared count still holds: a limit of N admits exactly N across both workers.
    limited = {"X-Tenant-ID": "limited"}
    responses = await asyncio.gather(
        *(client.get("/whoami", headers=limited) for _ in range(LIMIT) for client in fleet.both)
    )
    assert sorted(r.status_code for r in responses) == [200] * LIMIT + [429] * LIMIT

    print(
        f"{what}: promoted after {promoted:.2f} s, workers recovered after {recovery:.2f} s "
        f"and left the old master after {settling:.2f} s, "
        f"suspension reached the other worker {propagation * 1000:.0f} ms later; "
        f"traffic during it: {dict(statuses)}"
    )


@pytest.mark.redis_sentinel
async def test_a_sentinel_failover_mid_traffic_answers_no_500_and_recovers(
    tmp_path: Path,
) -> None:
    with RedisSentinelGroup() as group:
        async with fleet(group.url, tmp_path) as workers:
            old = group.master_port()
            await ride_out(
                workers,
                group.failover,
                "SENTINEL FAILOVER",
                settled=lambda: group.app_connections(old) == 0,
            )


@pytest.mark.slow
@pytest.mark.redis_sentinel
async def test_a_crashed_sentinel_master_mid_traffic_answers_no_500_and_recovers(
    tmp_path: Path,
) -> None:
    with RedisSentinelGroup() as group:
        async with fleet(group.url, tmp_path) as workers:
            await ride_out(workers, group.kill_master, "Sentinel master killed")


@pytest.mark.redis_cluster
async def test_a_crashed_cluster_master_mid_traffic_answers_no_500_and_recovers(
    tmp_path: Path,
) -> None:
    with RedisClusterNodes() as cluster:
        async with fleet(cluster.url, tmp_path) as workers:
            # The master holding the tenant cache's slot (its keys share the prefix's hash tag).
            await ride_out(
                workers,
                lambda: cluster.kill_master_of("{" + workers.prefix + "}"),
                "cluster master killed",
            )

"""Invalidations on a Redis Cluster survive the loss of the node a process subscribed on."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fastapi_tenancy.cache import CachedLookup, MemoryTenantCache
from fastapi_tenancy.cache.layered import LayeredTenantCache
from fastapi_tenancy.models import Tenant
from tests.support.polling import eventually
from tests.support.redis_cache import redis_cache
from tests.support.redis_topologies import RedisClusterNodes

ACME = Tenant(identifier="acme")


@pytest.mark.slow
@pytest.mark.redis_cluster
async def test_a_process_whose_subscription_node_dies_subscribes_on_another_and_hears_again() -> (
    None
):
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    with RedisClusterNodes() as cluster:
        first = LayeredTenantCache(MemoryTenantCache(100), redis_cache(cluster.url, prefix))
        second = LayeredTenantCache(MemoryTenantCache(100), redis_cache(cluster.url, prefix))
        await first.start()
        await second.start()
        try:
            assert first.redis_available
            assert second.redis_available
            await first.close()  # only the second's subscription is left on the cluster
            (node,) = cluster.subscriber_ports()
            first = LayeredTenantCache(MemoryTenantCache(100), redis_cache(cluster.url, prefix))

            await cluster_kill(cluster, node)
            await eventually(
                lambda: second.redis_available and node not in cluster.subscriber_ports(),
                what="the second process to subscribe on another node",
            )
            await first.start()

            token = await second.read_token("acme")
            await second.set("acme", ACME, ttl=60, token=token)
            assert await second.memory.get("acme") == CachedLookup(ACME)
            await first.delete("acme")

            async def second_forgot() -> bool:
                return await second.memory.get("acme") is None

            await eventually(second_forgot, what="the invalidation to reach the second process")
        finally:
            await first.close()
            await second.close()


async def cluster_kill(cluster: RedisClusterNodes, port: int) -> None:
    """Kill a node; if it was a master, wait for its replica to take over its slots."""
    masters = {cluster.master_of(key) for key in ("a", "b", "c")}
    if port in masters:
        key = next(k for k in ("a", "b", "c") if cluster.master_of(k) == port)
        await asyncio.to_thread(cluster.kill_master_of, key)
    else:
        cluster.kill(port)

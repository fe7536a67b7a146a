"""② Lookup: cache read-through, negative caching, single-flight and the status gate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from fastapi_tenancy import Tenant, TenantNotFound, TenantStatus, TenantSuspended
from fastapi_tenancy.cache import MemoryTenantCache
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.store import MemoryTenantStore
from tests.support.polling import eventually
from tests.support.redis_cache import redis_cache, start_subscribed


class CountingStore(MemoryTenantStore):
    """A real in-memory store that counts identifier lookups and can be made slow."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.release = asyncio.Event()
        self.release.set()

    async def get_by_identifier(self, identifier: str) -> Tenant | None:
        self.lookups += 1
        await self.release.wait()
        return await super().get_by_identifier(identifier)


@pytest.fixture
async def store() -> CountingStore:
    store = CountingStore()
    await store.add(Tenant(identifier="acme"))
    await store.add(Tenant(identifier="paused", status=TenantStatus.SUSPENDED))
    await store.add(Tenant(identifier="gone", status=TenantStatus.DELETED))
    await store.add(Tenant(identifier="new", status=TenantStatus.PENDING))
    await store.add(Tenant(identifier="building", status=TenantStatus.PROVISIONING))
    return store


def make_lookup(store: CountingStore, *, cached: bool = True) -> TenantLookup:
    cache = MemoryTenantCache() if cached else None
    return TenantLookup(store, cache, ttl=60, negative_ttl=5)


async def test_warm_lookup_does_not_query_the_store(store: CountingStore) -> None:
    lookup = make_lookup(store)
    assert (await lookup.get_active("acme")).identifier == "acme"
    assert (await lookup.get_active("acme")).identifier == "acme"
    assert store.lookups == 1


async def test_unknown_identifiers_are_negatively_cached(store: CountingStore) -> None:
    lookup = make_lookup(store)
    for _ in range(3):
        with pytest.raises(TenantNotFound):
            await lookup.get_active("nobody")
    assert store.lookups == 1


async def test_without_cache_every_lookup_queries_the_store(store: CountingStore) -> None:
    lookup = make_lookup(store, cached=False)
    await lookup.get_active("acme")
    await lookup.get_active("acme")
    assert store.lookups == 2


async def test_status_gate(store: CountingStore) -> None:
    lookup = make_lookup(store)
    with pytest.raises(TenantSuspended):
        await lookup.get_active("paused")
    for identifier in ("gone", "new", "building"):
        with pytest.raises(TenantNotFound) as refused:
            await lookup.get_active(identifier)
        assert type(refused.value) is TenantNotFound


async def test_concurrent_misses_share_one_store_query(store: CountingStore) -> None:
    lookup = make_lookup(store)
    store.release.clear()
    waiters = [asyncio.ensure_future(lookup.get_active("acme")) for _ in range(50)]
    await asyncio.sleep(0.01)
    store.release.set()
    tenants = await asyncio.gather(*waiters)
    assert {t.identifier for t in tenants} == {"acme"}
    assert store.lookups == 1


async def test_cancelled_waiter_does_not_cancel_the_shared_load(store: CountingStore) -> None:
    lookup = make_lookup(store)
    store.release.clear()
    first = asyncio.ensure_future(lookup.get_active("acme"))
    second = asyncio.ensure_future(lookup.get_active("acme"))
    await asyncio.sleep(0.01)
    first.cancel()
    store.release.set()
    assert (await second).identifier == "acme"
    assert store.lookups == 1


async def test_invalidate_discards_a_load_already_in_flight(store: CountingStore) -> None:
    lookup = make_lookup(store)
    acme = await store.get_by_identifier("acme")
    assert acme is not None
    store.release.clear()
    stale = asyncio.ensure_future(lookup.find("acme"))
    await asyncio.sleep(0.01)
    await store.update(acme.model_copy(update={"status": TenantStatus.SUSPENDED}))
    await lookup.invalidate("acme")
    store.release.set()
    await stale
    with pytest.raises(TenantSuspended):
        await lookup.get_active("acme")


# Several processes: each has its own lookup and memory, and they share Redis.


@asynccontextmanager
async def process_lookup(
    store: CountingStore, prefix: str, heard: list[str | None] | None = None
) -> AsyncIterator[TenantLookup]:
    """The lookup of one app process: memory in front of the shared Redis, as Tenancy wires it.

    ``heard`` collects the invalidations other processes announce, once the lookup has seen them.
    """
    from fastapi_tenancy.cache.layered import LayeredTenantCache

    cache = LayeredTenantCache(MemoryTenantCache(), redis_cache(prefix=prefix, timeout=10.0))
    lookup = TenantLookup(store, cache, ttl=60, negative_ttl=5)
    cache.listeners.append(lookup.forget)
    if heard is not None:
        cache.listeners.append(heard.append)
    await start_subscribed(cache)
    try:
        yield lookup
    finally:
        await cache.clear()
        await cache.close()


@pytest.mark.redis
async def test_a_tenant_loaded_by_one_process_is_served_to_another_from_redis(
    store: CountingStore,
) -> None:
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with process_lookup(store, prefix) as first, process_lookup(store, prefix) as second:
        await first.get_active("acme")
        with pytest.raises(TenantNotFound):
            await first.get_active("nobody")

        await second.get_active("acme")
        with pytest.raises(TenantNotFound):
            await second.get_active("nobody")

    assert store.lookups == 2  # one per identifier, for both processes


@pytest.mark.redis
async def test_a_stampede_on_a_cold_tenant_across_processes_reads_the_store_once_each(
    store: CountingStore,
) -> None:
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    async with process_lookup(store, prefix) as first:
        store.release.clear()
        waiters = [asyncio.ensure_future(first.get_active("acme")) for _ in range(50)]
        await asyncio.sleep(0.01)
        store.release.set()
        assert {t.identifier for t in await asyncio.gather(*waiters)} == {"acme"}
    assert store.lookups == 1


@pytest.mark.redis
async def test_an_invalidation_by_another_process_discards_a_load_in_flight_here(
    store: CountingStore,
) -> None:
    prefix = f"tt-{uuid.uuid4().hex[:12]}"
    heard: list[str | None] = []
    async with (
        process_lookup(store, prefix, heard) as here,
        process_lookup(store, prefix) as there,
    ):
        acme = await store.get_by_identifier("acme")
        assert acme is not None
        store.release.clear()
        stale = asyncio.ensure_future(here.find("acme"))  # reads the store before the change
        await asyncio.sleep(0.01)
        await store.update(acme.model_copy(update={"status": TenantStatus.SUSPENDED}))
        await there.invalidate("acme")
        await eventually(lambda: "acme" in heard)  # the announcement reached this process
        store.release.set()
        await stale

        with pytest.raises(TenantSuspended):
            await here.get_active("acme")
        with pytest.raises(TenantSuspended):
            await there.get_active("acme")

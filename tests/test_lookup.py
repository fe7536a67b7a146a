"""② Lookup: cache read-through, negative caching, single-flight and the status gate."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_tenancy import Tenant, TenantNotFound, TenantStatus, TenantSuspended
from fastapi_tenancy.cache import MemoryTenantCache
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.store import MemoryTenantStore


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
    assert (await lookup.resolve("acme")).identifier == "acme"
    assert (await lookup.resolve("acme")).identifier == "acme"
    assert store.lookups == 1


async def test_unknown_identifiers_are_negatively_cached(store: CountingStore) -> None:
    lookup = make_lookup(store)
    for _ in range(3):
        with pytest.raises(TenantNotFound):
            await lookup.resolve("nobody")
    assert store.lookups == 1


async def test_without_cache_every_lookup_queries_the_store(store: CountingStore) -> None:
    lookup = make_lookup(store, cached=False)
    await lookup.resolve("acme")
    await lookup.resolve("acme")
    assert store.lookups == 2


async def test_status_gate(store: CountingStore) -> None:
    lookup = make_lookup(store)
    with pytest.raises(TenantSuspended):
        await lookup.resolve("paused")
    for identifier in ("gone", "new", "building"):
        with pytest.raises(TenantNotFound) as refused:
            await lookup.resolve(identifier)
        assert type(refused.value) is TenantNotFound


async def test_concurrent_misses_share_one_store_query(store: CountingStore) -> None:
    lookup = make_lookup(store)
    store.release.clear()
    waiters = [asyncio.ensure_future(lookup.resolve("acme")) for _ in range(50)]
    await asyncio.sleep(0.01)
    store.release.set()
    tenants = await asyncio.gather(*waiters)
    assert {t.identifier for t in tenants} == {"acme"}
    assert store.lookups == 1


async def test_cancelled_waiter_does_not_cancel_the_shared_load(store: CountingStore) -> None:
    lookup = make_lookup(store)
    store.release.clear()
    first = asyncio.ensure_future(lookup.resolve("acme"))
    second = asyncio.ensure_future(lookup.resolve("acme"))
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
        await lookup.resolve("acme")

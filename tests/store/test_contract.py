"""The `TenantStore` contract: one set of tests run over every store and every database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import TenantAlreadyExists, TenantNotFound
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.store import MemoryTenantStore, SQLAlchemyTenantStore, TenantStore
from fastapi_tenancy.store.sqlalchemy import domains_table, tenants_table
from tests.conftest import empty_database
from tests.support.backends import DATABASES

STORES = [pytest.param("memory", id="memory"), *DATABASES]

PAST = datetime(2021, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


# The tests of a database share it, its central tables created once (a fresh database and
# migration per test was most of the module's time); `store` empties the tables before each test.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=STORES)
async def central(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine | None]:
    """The module's database of one kind with the central tables, or ``None`` for the memory
    store."""
    if request.param == "memory":
        yield None
        return
    async with empty_database(request.param, tmp_path_factory.mktemp("store")) as url:
        engine = central_engine(TenancyConfig(database_url=url))
        try:
            await SQLAlchemyTenantStore(engine).initialize()
            yield engine
        finally:
            await engine.dispose()


@pytest_asyncio.fixture(loop_scope="module")
async def store(central: AsyncEngine | None) -> AsyncIterator[TenantStore]:
    """An initialized, empty store: in memory, or on the module's database of each kind."""
    if central is None:
        memory = MemoryTenantStore()
        await memory.initialize()
        yield memory
        await memory.close()
        return
    async with central.begin() as conn:
        for table in (domains_table, tenants_table):
            await conn.execute(table.delete())
    sql = SQLAlchemyTenantStore(central)
    await sql.initialize()
    yield sql
    await sql.close()


def make_tenant(identifier: str = "acme", **fields: object) -> Tenant:
    return Tenant.model_validate({"identifier": identifier, **fields})


async def test_add_then_get_returns_every_field(store: TenantStore) -> None:
    tenant = make_tenant(
        name="Ácme Ünïcode 株式会社 🚀",
        status=TenantStatus.SUSPENDED,
        metadata={"plan": "pro", "limits": {"seats": 25, "tags": ["a", "b"]}, "beta": True},
        created_at=PAST,
        updated_at=PAST + timedelta(microseconds=1),
        deleted_at=PAST + timedelta(days=1, microseconds=999_999),
    )
    assert await store.add(tenant) == tenant

    by_id = await store.get(tenant.id)
    by_identifier = await store.get_by_identifier("acme")

    assert by_id == tenant
    assert by_identifier == tenant


async def test_timestamps_in_any_offset_keep_their_instant(store: TenantStore) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    created = datetime(2022, 1, 2, 3, 4, 5, 600_007, tzinfo=india)
    await store.add(make_tenant(created_at=created, updated_at=created))

    stored = await store.get_by_identifier("acme")

    assert stored is not None
    assert stored.created_at == created
    assert stored.created_at.tzinfo is not None
    assert stored.deleted_at is None


async def test_unknown_tenants_are_none(store: TenantStore) -> None:
    await store.add(make_tenant())

    assert await store.get("0" * 32) is None
    assert await store.get_by_identifier("nobody") is None


async def test_add_rejects_a_taken_id(store: TenantStore) -> None:
    tenant = await store.add(make_tenant())

    with pytest.raises(TenantAlreadyExists):
        await store.add(make_tenant("other", id=tenant.id))
    assert await store.get_by_identifier("other") is None


async def test_add_rejects_a_taken_identifier(store: TenantStore) -> None:
    first = await store.add(make_tenant())

    with pytest.raises(TenantAlreadyExists):
        await store.add(make_tenant())
    assert await store.list() == [first]


async def test_update_replaces_fields_and_bumps_updated_at(store: TenantStore) -> None:
    tenant = await store.add(make_tenant(created_at=PAST, updated_at=PAST))
    changed = tenant.model_copy(
        update={
            "identifier": "acme-renamed",
            "name": "Acme Ltd",
            "status": TenantStatus.DELETED,
            "metadata": {"plan": "free"},
            "deleted_at": PAST + timedelta(hours=1),
        }
    )
    before = datetime.now(UTC)

    stored = await store.update(changed)

    assert stored.updated_at >= before
    assert stored == changed.model_copy(update={"updated_at": stored.updated_at})
    assert await store.get(tenant.id) == stored
    assert await store.get_by_identifier("acme-renamed") == stored
    assert await store.get_by_identifier("acme") is None


async def test_update_of_a_missing_tenant_raises_not_found(store: TenantStore) -> None:
    with pytest.raises(TenantNotFound):
        await store.update(make_tenant())
    assert await store.list(include_deleted=True) == []


async def test_update_rejects_another_tenants_identifier(store: TenantStore) -> None:
    acme = await store.add(make_tenant("acme"))
    globex = await store.add(make_tenant("globex"))

    with pytest.raises(TenantAlreadyExists):
        await store.update(globex.model_copy(update={"identifier": "acme"}))
    assert await store.get_by_identifier("acme") == acme
    assert await store.get_by_identifier("globex") == globex


async def test_delete_removes_the_record_and_is_idempotent(store: TenantStore) -> None:
    tenant = await store.add(make_tenant())
    kept = await store.add(make_tenant("kept"))

    await store.delete(tenant.id)
    await store.delete(tenant.id)

    assert await store.get(tenant.id) is None
    assert await store.get_by_identifier("acme") is None
    assert await store.list(include_deleted=True) == [kept]


async def test_delete_frees_the_identifier(store: TenantStore) -> None:
    tenant = await store.add(make_tenant())
    await store.delete(tenant.id)

    again = await store.add(make_tenant())

    assert await store.get_by_identifier("acme") == again


async def test_list_is_ordered_by_identifier_and_hides_soft_deleted(store: TenantStore) -> None:
    # Code-point order: '-' sorts before digits, digits before letters, whatever the collation.
    for identifier in ["zeta", "a-c", "ab", "a1", "gone"]:
        status = TenantStatus.DELETED if identifier == "gone" else TenantStatus.ACTIVE
        await store.add(make_tenant(identifier, status=status))
    await store.add(make_tenant("paused", status=TenantStatus.SUSPENDED))

    visible = [tenant.identifier for tenant in await store.list()]
    everything = [tenant.identifier for tenant in await store.list(include_deleted=True)]

    assert visible == ["a-c", "a1", "ab", "paused", "zeta"]
    assert everything == ["a-c", "a1", "ab", "gone", "paused", "zeta"]


async def test_initialize_twice_is_harmless(store: TenantStore) -> None:
    tenant = await store.add(make_tenant())

    await store.initialize()
    await store.initialize()

    assert await store.get(tenant.id) == tenant


async def test_claiming_takes_pending_tenants_oldest_first_and_counts_attempts(
    store: TenantStore,
) -> None:
    for n in range(4):
        created = PAST + timedelta(minutes=n)
        await store.add(make_tenant(f"p{n}", status=TenantStatus.PENDING, created_at=created))
    await store.add(make_tenant("live", status=TenantStatus.ACTIVE))
    first = await store.claim_for_provisioning(limit=3, stale_before=PAST)
    assert [t.identifier for t in first] == ["p0", "p1", "p2"]
    assert {(t.status, t.provisioning_attempts) for t in first} == {(TenantStatus.PROVISIONING, 1)}
    stored = await store.get_by_identifier("p0")
    assert stored is not None
    assert (stored.status, stored.provisioning_attempts) == (TenantStatus.PROVISIONING, 1)
    rest = await store.claim_for_provisioning(limit=3, stale_before=PAST)
    assert [t.identifier for t in rest] == ["p3"]


async def test_concurrent_claims_never_share_a_tenant(store: TenantStore) -> None:
    for n in range(20):
        await store.add(make_tenant(f"c{n:02d}", status=TenantStatus.PENDING))
    claimed: list[str] = []
    for _ in range(20):  # losers of a race come back empty-handed and try again
        batches = await asyncio.gather(
            *(store.claim_for_provisioning(limit=7, stale_before=PAST) for _ in range(4))
        )
        claimed += [tenant.identifier for batch in batches for tenant in batch]
        if len(claimed) >= 20:
            break
    assert len(claimed) == len(set(claimed)) == 20


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tenants=st.integers(min_value=20, max_value=30),
    claimers=st.integers(min_value=6, max_value=10),
    limit=st.integers(min_value=1, max_value=3),
)
async def test_racing_claimers_each_get_distinct_tenants_and_no_error(
    store: TenantStore, tenants: int, claimers: int, limit: int
) -> None:
    # Workers in several processes claim at once; on MariaDB two claims could deadlock on the
    # status index and one raised 1213 to its worker. Every example claims all of its tenants,
    # so the next example's claims see only its own.
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    for n in range(tenants):
        await store.add(make_tenant(f"{prefix}{n:02d}", status=TenantStatus.PENDING))
    claimed: list[str] = []
    for _ in range(tenants + 5):
        batches = await asyncio.gather(
            *(store.claim_for_provisioning(limit=limit, stale_before=PAST) for _ in range(claimers))
        )
        claimed += [tenant.identifier for batch in batches for tenant in batch]
        if len(claimed) >= tenants:
            break
    assert all(identifier.startswith(prefix) for identifier in claimed)
    assert len(claimed) == len(set(claimed)) == tenants


async def test_stale_provisioning_is_claimed_again_only_when_stale(store: TenantStore) -> None:
    await store.add(make_tenant("orphan", status=TenantStatus.PENDING))
    [claimed] = await store.claim_for_provisioning(limit=5, stale_before=PAST)
    assert await store.claim_for_provisioning(limit=5, stale_before=claimed.updated_at) == []
    later = claimed.updated_at + timedelta(seconds=1)
    [again] = await store.claim_for_provisioning(limit=5, stale_before=later)
    assert again.provisioning_attempts == 2

"""The `Tenancy` runtime: lifecycle basics and sessions for scripts, on every database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, select

from fastapi_tenancy import (
    InvalidTenantIdentifier,
    InvalidTransition,
    ServiceUnavailable,
    Tenancy,
    TenantAlreadyExists,
    TenantNotFound,
    TenantStatus,
    TenantSuspended,
    current_tenant,
)
from tests.support.backends import all_isolations, isolation_config
from tests.support.models import Item
from tests.test_lifecycle import SignallingInFlight

pytestmark = all_isolations


@pytest.fixture
async def tenancy(isolation_case: tuple[str, str]) -> AsyncIterator[Tenancy]:
    async with Tenancy(isolation_config(isolation_case)) as tenancy:
        yield tenancy


async def add_items(tenancy: Tenancy, identifier: str, *names: str) -> None:
    async with tenancy.session(identifier) as session:
        session.add_all(Item(name=name) for name in names)
        await session.commit()


async def item_names(tenancy: Tenancy, identifier: str) -> list[str]:
    async with tenancy.session(identifier) as session:
        return sorted((await session.scalars(select(Item.name))).all())


async def test_create_get_and_list(tenancy: Tenancy) -> None:
    created = await tenancy.create_tenant("acme", name="Acme Inc.", metadata={"plan": "pro"})
    assert created.status is TenantStatus.ACTIVE
    assert await tenancy.get_tenant("acme") == created
    assert await tenancy.get_tenant("nobody") is None
    await tenancy.create_tenant("beta")
    assert [t.identifier for t in await tenancy.list_tenants()] == ["acme", "beta"]


async def test_create_refuses_duplicates_and_malformed_identifiers(tenancy: Tenancy) -> None:
    await tenancy.create_tenant("acme")
    with pytest.raises(TenantAlreadyExists):
        await tenancy.create_tenant("acme")
    with pytest.raises(InvalidTenantIdentifier):
        await tenancy.create_tenant("Bad Name")


async def test_suspend_activate_delete_restore(tenancy: Tenancy) -> None:
    await tenancy.create_tenant("acme")
    await add_items(tenancy, "acme", "anvil")
    assert (await tenancy.suspend_tenant("acme")).status is TenantStatus.SUSPENDED
    with pytest.raises(TenantSuspended):
        await item_names(tenancy, "acme")
    assert (await tenancy.activate_tenant("acme")).status is TenantStatus.ACTIVE
    deleted = await tenancy.delete_tenant("acme")
    assert deleted.status is TenantStatus.DELETED
    assert deleted.deleted_at is not None
    assert [t.identifier for t in await tenancy.list_tenants()] == []
    assert [t.identifier for t in await tenancy.list_tenants(include_deleted=True)] == ["acme"]
    with pytest.raises(TenantNotFound):
        await item_names(tenancy, "acme")
    restored = await tenancy.restore_tenant("acme")
    assert restored.status is TenantStatus.ACTIVE
    assert restored.deleted_at is None
    assert await item_names(tenancy, "acme") == ["anvil"]


async def test_illegal_transitions_raise_and_repeats_are_no_ops(tenancy: Tenancy) -> None:
    await tenancy.create_tenant("acme")
    assert (await tenancy.activate_tenant("acme")).status is TenantStatus.ACTIVE
    await tenancy.delete_tenant("acme")
    with pytest.raises(InvalidTransition):
        await tenancy.suspend_tenant("acme")
    with pytest.raises(TenantNotFound):
        await tenancy.suspend_tenant("nobody")


async def test_purge_requires_deletion_and_removes_only_that_tenant(tenancy: Tenancy) -> None:
    await tenancy.create_tenant("acme")
    await tenancy.create_tenant("beta")
    await add_items(tenancy, "acme", "anvil")
    await add_items(tenancy, "beta", "boat")
    with pytest.raises(InvalidTransition):
        await tenancy.purge_tenant("acme")
    await tenancy.delete_tenant("acme")
    await tenancy.purge_tenant("acme")
    assert await tenancy.get_tenant("acme") is None
    assert await item_names(tenancy, "beta") == ["boat"]
    # The identifier is free again, and the new tenant starts empty.
    await tenancy.create_tenant("acme")
    assert await item_names(tenancy, "acme") == []


async def test_delete_without_soft_delete_purges(isolation_case: tuple[str, str]) -> None:
    config = isolation_config(isolation_case, enable_soft_delete=False)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        await add_items(tenancy, "acme", "anvil")
        await tenancy.delete_tenant("acme")
        assert await tenancy.get_tenant("acme") is None
        await tenancy.create_tenant("acme")
        assert await item_names(tenancy, "acme") == []


async def test_failed_provisioning_leaves_no_tenant_record(
    isolation_case: tuple[str, str],
) -> None:
    broken = MetaData()
    Table(
        "broken",
        broken,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", String(64)),
        Column("missing_id", ForeignKey("does_not_exist.id")),
    )
    async with Tenancy(isolation_config(isolation_case, tenant_metadata=broken)) as t:
        with pytest.raises(Exception, match="does_not_exist"):
            await t.create_tenant("acme")
        assert await t.get_tenant("acme") is None


async def test_tenant_scope_binds_the_current_tenant(tenancy: Tenancy) -> None:
    await tenancy.create_tenant("acme")
    async with tenancy.tenant_scope("acme") as tenant:
        assert current_tenant() == tenant
    async with tenancy.session("acme"):
        assert current_tenant().identifier == "acme"


async def test_purge_waits_for_in_flight_work_then_destroys(
    isolation_case: tuple[str, str],
) -> None:
    tenancy = Tenancy(isolation_config(isolation_case))
    inflight = SignallingInFlight()
    tenancy.inflight = inflight
    async with tenancy:
        tenant = await tenancy.create_tenant("acme")
        await add_items(tenancy, "acme", "anvil")
        async with tenancy.tenant_session(tenant) as session:
            await tenancy.delete_tenant("acme")
            purge = asyncio.create_task(tenancy.purge_tenant("acme"))
            await inflight.waiting.wait()  # the purge waits for the work in flight...
            assert inflight.count(tenant.id) == 1  # ...which is this session's
            assert not purge.done()  # drained only once this session ends
            assert (await session.scalars(select(Item.name))).all() == ["anvil"]
        await purge
        assert await tenancy.get_tenant("acme") is None


async def test_purge_refuses_when_work_does_not_drain_in_time(
    isolation_case: tuple[str, str],
) -> None:
    config = isolation_config(isolation_case, database_pool_timeout=0.2)
    async with Tenancy(config) as tenancy:
        tenant = await tenancy.create_tenant("acme")
        await add_items(tenancy, "acme", "anvil")
        await tenancy.delete_tenant("acme")
        async with tenancy.tenant_session(tenant):
            with pytest.raises(ServiceUnavailable, match="nothing was purged"):
                await tenancy.purge_tenant("acme")
        await tenancy.restore_tenant("acme")
        assert await item_names(tenancy, "acme") == ["anvil"]

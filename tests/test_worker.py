"""The provisioning worker: pending tenants become active exactly once, also with two workers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, inspect

from fastapi_tenancy import InvalidTransition, Tenancy, TenantStatus
from fastapi_tenancy.worker import ProvisioningWorker
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.cli import CLI

ROOT = Path(__file__).parent.parent
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
async def tenancy(tmp_path: Path) -> AsyncIterator[Tenancy]:
    config = isolation_config(("row", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"))
    async with Tenancy(config) as tenancy:
        yield tenancy


async def test_pending_tenants_are_provisioned_and_then_served(tenancy: Tenancy) -> None:
    for n in range(5):
        pending = await tenancy.create_tenant(f"t{n}", provision=False)
        assert pending.status is TenantStatus.PENDING
    result = await ProvisioningWorker(tenancy, batch_size=2).run(exit_when_idle=True)
    assert (result.provisioned, result.retried, result.failed) == (5, 0, 0)
    for tenant in await tenancy.list_tenants():
        assert tenant.status is TenantStatus.ACTIVE
        assert tenant.provisioning_attempts == 1
        assert await tenancy.lookup.get_active(tenant.identifier) == tenant


async def test_provisioning_retries_then_gives_up(tmp_path: Path) -> None:
    broken = MetaData()
    Table(
        "broken", broken, Column("id", Integer, primary_key=True), Column("x", ForeignKey("no.id"))
    )
    config = isolation_config(
        ("row", f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"), tenant_metadata=broken
    )
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("doomed", provision=False)
        worker = ProvisioningWorker(tenancy, max_attempts=3)
        first = await worker.run_once()
        assert (first.retried, first.failed) == (1, 0)
        result = await worker.run(exit_when_idle=True)
        assert (result.retried, result.failed) == (1, 1)
        doomed = await tenancy.get_tenant("doomed")
        assert doomed is not None
        assert doomed.status is TenantStatus.FAILED
        assert doomed.provisioning_attempts == 3


async def test_a_tenant_left_provisioning_by_a_dead_worker_is_claimed_again(
    tenancy: Tenancy,
) -> None:
    await tenancy.create_tenant("orphan", provision=False)
    [claimed] = await tenancy.store.claim_for_provisioning(limit=10, stale_before=LONG_AGO)
    assert claimed.status is TenantStatus.PROVISIONING
    patient = ProvisioningWorker(tenancy, stale_after=3600)
    assert (await patient.run_once()).claimed == 0
    await asyncio.sleep(0.05)
    eager = ProvisioningWorker(tenancy, stale_after=0.01)
    assert (await eager.run_once()).provisioned == 1
    orphan = await tenancy.get_tenant("orphan")
    assert orphan is not None
    assert orphan.status is TenantStatus.ACTIVE
    assert orphan.provisioning_attempts == 2


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_worker_processes_provision_each_tenant_exactly_once(database_url: str) -> None:
    config = isolation_config(("schema", database_url))
    identifiers = [f"w{n:02d}" for n in range(50)]
    async with Tenancy(config) as tenancy:
        for identifier in identifiers:
            await tenancy.create_tenant(identifier, provision=False)
    env = {
        **os.environ,
        "TENANCY_DATABASE_URL": database_url,
        "TENANCY_ISOLATION_STRATEGY": "schema",
        "TENANCY_SCHEMA_PREFIX": TEST_STORAGE_PREFIX,
        "TENANCY_TENANT_METADATA": "tests.support.models:Base.metadata",
        "PYTHONPATH": str(ROOT),  # so the workers can import tests.support.models
    }
    workers = [
        await asyncio.create_subprocess_exec(
            str(CLI),
            "worker",
            "--exit-when-idle",
            "--batch-size",
            "3",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(worker.communicate(), timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    counts = [int(out.decode().split("provisioned=")[1].split()[0]) for out, _ in outputs]
    assert sum(counts) == 50
    async with Tenancy(config) as tenancy:
        tenants = await tenancy.list_tenants()
        assert {t.identifier for t in tenants} == set(identifiers)
        assert {t.status for t in tenants} == {TenantStatus.ACTIVE}
        assert {t.provisioning_attempts for t in tenants} == {1}
        async with tenancy.engine.connect() as conn:
            schemas = set(await conn.run_sync(lambda c: inspect(c).get_schema_names()))
        assert {t.storage_name for t in tenants} <= schemas


async def test_a_worker_whose_claim_was_taken_over_cannot_undo_the_new_workers_result(
    tenancy: Tenancy,
) -> None:
    await tenancy.create_tenant("slow", provision=False)
    [stale] = await tenancy.store.claim_for_provisioning(limit=1, stale_before=LONG_AGO)
    await asyncio.sleep(0.05)
    assert (await ProvisioningWorker(tenancy, stale_after=0.01).run_once()).provisioned == 1

    with pytest.raises(InvalidTransition, match="it changed meanwhile"):
        await tenancy.lifecycle.provision_claimed(stale, max_attempts=1)

    slow = await tenancy.get_tenant("slow")
    assert slow is not None
    assert slow.status is TenantStatus.ACTIVE

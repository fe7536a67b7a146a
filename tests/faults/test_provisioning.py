"""The central database going away in the middle of provisioning a batch.

The worker reaches the central database (tenant records and, under schema isolation, the tenant
schemas) through a `FaultProxy`; under database isolation the tenant databases are reached
directly. The outage starts right after a tenant's storage was created and
before the tenant is marked active, the worst moment: the worker must survive it, back off, hand
the rest of the batch back, and on recovery finish every tenant, reusing the storage it made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_tenancy import Tenancy, TenantStatus
from fastapi_tenancy.isolation.templates import is_template_database
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.worker import ProvisioningWorker
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.fault_proxy import FaultProxy

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize(
        "isolation_case", [("schema", "postgres"), ("database", "postgres")], indirect=True
    ),
]

BATCH = ["first", "interrupted", "third", "fourth"]


@pytest.fixture
async def proxy(isolation_case: tuple[str, str]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.for_url(isolation_case[1], 5432) as proxy:
        yield proxy


class PausedListener(logging.Handler):
    """Sets ``paused`` when the worker logs that provisioning paused for an outage."""

    def __init__(self, paused: asyncio.Event) -> None:
        super().__init__()
        self.paused = paused

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("provisioning paused"):
            self.paused.set()


async def storage_oid(url: str, strategy: str, name: str | None) -> int | None:
    """The server's id for the tenant's schema or database: it changes if storage is remade."""
    catalog = "pg_namespace WHERE nspname" if strategy == "schema" else "pg_database WHERE datname"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            statement = text(f"SELECT oid::bigint FROM {catalog} = :name")
            value = (await conn.execute(statement, {"name": name})).scalar_one_or_none()
            return None if value is None else int(value)
    finally:
        await engine.dispose()


async def storage_names(url: str, strategy: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            if strategy == "schema":
                names = await conn.run_sync(lambda sync: inspect(sync).get_schema_names())
            else:
                rows = await conn.execute(text("SELECT datname FROM pg_database"))
                names = [str(name) for name in rows.scalars()]
            # The template tenant databases are copied from is kept on purpose, not orphaned.
            return {
                name
                for name in names
                if name.startswith(TEST_STORAGE_PREFIX)
                and not is_template_database(name, TEST_STORAGE_PREFIX)
            }
    finally:
        await engine.dispose()


async def test_an_outage_right_after_storage_was_created_is_survived_and_the_storage_reused(
    isolation_case: tuple[str, str], proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    strategy, direct_url = isolation_case
    config = isolation_config(isolation_case, database_url=proxy.url_for(direct_url))
    created_oid: list[int | None] = []

    async def prepare(tenant: Tenant) -> None:
        # Runs once the storage exists, before the tenant is marked active.
        if tenant.identifier == "interrupted" and not created_oid:
            created_oid.append(await storage_oid(direct_url, strategy, tenant.storage_name))
            await proxy.refuse()
            proxy.cut()

    async with Tenancy(config) as tenancy:
        for identifier in BATCH:
            await tenancy.create_tenant(identifier, provision=False)
        worker = ProvisioningWorker(
            tenancy, batch_size=len(BATCH), backoff=0.05, max_backoff=0.2, prepare=prepare
        )

        paused = asyncio.Event()
        listener = PausedListener(paused)
        logging.getLogger("fastapi_tenancy.worker").addHandler(listener)

        async def end_the_outage() -> None:
            await paused.wait()  # the worker noticed the outage and is backing off
            await proxy.restore()

        restorer = asyncio.create_task(end_the_outage())
        try:
            with caplog.at_level(logging.WARNING, logger="fastapi_tenancy.worker"):
                result = await asyncio.wait_for(worker.run(exit_when_idle=True), timeout=120)
            await restorer
        finally:
            logging.getLogger("fastapi_tenancy.worker").removeHandler(listener)

        assert worker.outages == 1
        logged = [r for r in caplog.records if r.getMessage().startswith("provisioning paused")]
        assert len(logged) == 1  # logged once for the whole outage, not once per retry
        assert result.failed == 0
        tenants = {t.identifier: t for t in await tenancy.list_tenants()}
        assert {t.status for t in tenants.values()} == {TenantStatus.ACTIVE}
        # The interrupted attempt counts; the tenants it never reached got their attempt back.
        assert {name: t.provisioning_attempts for name, t in tenants.items()} == {
            "first": 1,
            "interrupted": 2,
            "third": 1,
            "fourth": 1,
        }
        interrupted = tenants["interrupted"]
        assert created_oid == [await storage_oid(direct_url, strategy, interrupted.storage_name)]
        async with tenancy.session("interrupted") as session:
            assert (await session.execute(text("SELECT count(*) FROM items"))).scalar() == 0

    # Nothing orphaned: the only storage is the tenants' own.
    assert await storage_names(direct_url, strategy) == {t.storage_name for t in tenants.values()}

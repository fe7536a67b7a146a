"""Audit records survive an unreachable central database: none lost, none written twice.

The central database (where ``tenancy_audit`` lives) sits behind a `FaultProxy`; the tenant's own
database is reached directly (database isolation), so write requests keep succeeding while the
central database refuses connections, and each of them owes one audit row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.observe.audit import AuditTrail, SpillFile, audit_table
from fastapi_tenancy.observe.audit.spill import decode_line
from tests.support.backends import isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import running
from tests.support.polling import eventually

TENANT = "auditwarm"

CASES = [
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="postgres"),
    pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="mysql"),
]

pytestmark = pytest.mark.parametrize("isolation_case", CASES, indirect=True)


@pytest.fixture
async def proxy(isolation_case: tuple[str, str]) -> AsyncIterator[FaultProxy]:
    _, url = isolation_case
    async with FaultProxy.for_url(url, 5432 if url.startswith("postgres") else 3306) as proxy:
        yield proxy


def audit_config(
    isolation_case: tuple[str, str], proxy: FaultProxy, spill: Path, **overrides: object
) -> TenancyConfig:
    return isolation_config(
        isolation_case,
        database_url=proxy.url_for(isolation_case[1]),
        enable_audit_logging=True,
        audit_spill_path=str(spill),
        **overrides,
    )


async def request_rows(url: str) -> int:
    """How many ``request:POST`` audit rows the central database holds."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).where(audit_table.c.action == "request:POST")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


def spilled_database_records(spill: Path) -> list[str]:
    """The ids of the ``request:POST`` records the spill file owes the database; the seeding's
    lifecycle records may be among the lines too, when the proxy cut their first write."""
    return [
        record.record_id
        for sink, record in map(decode_line, SpillFile(spill).read())
        if sink == "database" and record.action == "request:POST"
    ]


async def test_records_written_while_the_central_database_is_down_all_arrive(
    isolation_case: tuple[str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    spill = tmp_path / "spill.jsonl"
    async with running(audit_config(isolation_case, proxy, spill), [TENANT]) as service:
        trail = service.tenancy.audit
        assert isinstance(trail, AuditTrail)
        statuses = [(await service.post(TENANT, f"before-{n}")).status_code for n in range(5)]

        await proxy.refuse()
        proxy.cut()
        # Down for longer than the retries: records go to the spill file.
        while trail.spilled == 0:
            statuses.append((await service.post(TENANT, "down")).status_code)
            await asyncio.sleep(0.05)
        statuses += [(await service.post(TENANT, f"spilled-{n}")).status_code for n in range(5)]

        await proxy.restore()
        await eventually(lambda: not spilled_database_records(spill) and trail.pending == 0)
        statuses += [(await service.post(TENANT, f"after-{n}")).status_code for n in range(5)]
    assert set(statuses) == {200}  # the tenant's own database served every request
    assert trail.dropped == 0
    assert await request_rows(isolation_case[1]) == len(statuses)


async def test_records_spilled_at_shutdown_are_written_once_at_the_next_start(
    isolation_case: tuple[str, str], proxy: FaultProxy, tmp_path: Path
) -> None:
    spill = tmp_path / "spill.jsonl"
    config = audit_config(isolation_case, proxy, spill, audit_flush_timeout=0.5, shutdown_timeout=4)
    async with running(config, [TENANT]) as service:
        trail = service.tenancy.audit
        assert isinstance(trail, AuditTrail)
        await proxy.refuse()
        proxy.cut()
        statuses = [(await service.post(TENANT, f"down-{n}")).status_code for n in range(8)]
    # Shut down while the database was still down: the records waited in the spill file.
    assert statuses == [200] * 8
    assert trail.dropped == 0
    spilled = spilled_database_records(spill)
    assert len(spilled) == len(set(spilled)) == 8  # each once: none lost, none spilled twice
    assert await request_rows(isolation_case[1]) == 0

    await proxy.restore()
    for _ in range(2):  # the second start finds nothing left to replay
        tenancy = Tenancy(config)
        async with tenancy:
            assert tenancy.audit is not None
            await eventually(lambda: not spilled_database_records(spill))
        assert await request_rows(isolation_case[1]) == 8

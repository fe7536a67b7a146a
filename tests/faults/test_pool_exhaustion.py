"""Pool exhaustion: with every connection held, the next request gets a clear 503, never a hang.

The pool has one connection and no overflow; ``/hold`` keeps it checked out. Another request then
waits ``database_pool_timeout`` for it and is refused with the generic 503; once the holder lets
go, requests succeed again. The bound on the wait is generous (ten times the timeout) so the test
never depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.backends import isolation_config
from tests.support.faults import GENERIC_503, Holder, Running, running

POOL_TIMEOUT = 0.5
TENANTS = ["poolalpha", "poolbravo"]

CASES = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="row-mysql"),
]

pytestmark = pytest.mark.parametrize("isolation_case", CASES, indirect=True)


def one_connection(case: tuple[str, str]) -> dict[str, Any]:
    """Settings that leave exactly one connection for the tenants' sessions."""
    strategy, _ = case
    if strategy == "database":
        # Each tenant engine has one connection; the budget lets both tenants' engines open.
        return {"tenant_pool_size": 1, "database_connection_budget": 4}
    return {"database_pool_size": 1, "database_max_overflow": 0}


@pytest.fixture
async def holder() -> Holder:
    return Holder()


@pytest.fixture
async def service(isolation_case: tuple[str, str], holder: Holder) -> AsyncIterator[Running]:
    config = isolation_config(
        isolation_case, database_pool_timeout=POOL_TIMEOUT, **one_connection(isolation_case)
    )
    async with running(config, TENANTS, holder=holder) as service:
        try:
            yield service
        finally:
            holder.release.set()  # a failed test must not leave /hold running at shutdown


async def test_a_request_waiting_for_a_held_connection_gets_503_then_recovers(
    service: Running, holder: Holder
) -> None:
    # Warm the lookup cache so the refused request waits on the session's pool, not the store.
    assert await service.statuses("poolalpha") == [200]
    held = asyncio.create_task(service.get("poolalpha", "/hold"))
    await asyncio.wait_for(holder.holding.wait(), timeout=POOL_TIMEOUT * 10)

    refused = await asyncio.wait_for(service.get("poolalpha"), timeout=POOL_TIMEOUT * 10)

    assert refused.status_code == 503
    assert refused.json() == GENERIC_503
    holder.release.set()
    assert (await held).status_code == 200
    assert await service.statuses("poolalpha", 2) == [200, 200]
    assert await service.statuses("poolbravo") == [200]

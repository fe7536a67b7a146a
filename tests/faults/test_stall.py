"""A network stall (packets dropped, not refused) with ``statement_timeout`` set: a request to a
tenant whose data sits behind the stall answers 503 within about the timeout, instead of waiting
for the operating system to give up on the connection, and service resumes when traffic flows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.backends import isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import GENERIC_503, Running, running

TENANT = "stallwarm"
TIMEOUT = 1.0

pytestmark = pytest.mark.parametrize(
    "isolation_case",
    [pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres")],
    indirect=True,
)


@pytest.fixture
async def proxy(isolation_case: tuple[str, str]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy.for_url(isolation_case[1], 5432) as proxy:
        yield proxy


@pytest.fixture
async def service(isolation_case: tuple[str, str], proxy: FaultProxy) -> AsyncIterator[Running]:
    config = isolation_config(
        isolation_case, database_url=proxy.url_for(isolation_case[1]), statement_timeout=TIMEOUT
    )
    async with running(config, [TENANT]) as service:
        yield service


async def test_a_request_during_a_stall_answers_503_within_the_statement_timeout(
    proxy: FaultProxy, service: Running
) -> None:
    assert await service.statuses(TENANT) == [200]
    proxy.pause()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await asyncio.wait_for(service.get(TENANT), TIMEOUT * 10)
    elapsed = loop.time() - started
    assert response.status_code == 503
    assert response.json() == GENERIC_503
    # The pre-ping and the query each wait at most the timeout; no OS-level TCP timeout.
    assert elapsed < TIMEOUT * 6
    await proxy.restore()
    assert await service.statuses(TENANT, 2) == [200, 200]

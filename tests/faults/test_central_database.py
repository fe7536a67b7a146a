"""The central database unreachable: a generic 503, then recovery on its own.

The app reaches the central database (tenant records, and the rows under row isolation) through a
`FaultProxy`. While the proxy refuses new connections and has cut the live ones:

* a tenant that is not cached cannot be looked up: 503, the same generic body as any outage;
* under row isolation a cached tenant's data lives in the central database too: 503;
* under database isolation a cached tenant's data lives in its own database: still served.

When the proxy lets traffic through again, every tenant is served without restarting the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.backends import isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import GENERIC_503, Running, running

WARM = "centralwarm"
COLD = "centralcold"

CASES = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="row-mysql"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="database-mysql"),
]

pytestmark = pytest.mark.parametrize("isolation_case", CASES, indirect=True)


@pytest.fixture
async def proxy(isolation_case: tuple[str, str]) -> AsyncIterator[FaultProxy]:
    _, url = isolation_case
    async with FaultProxy.for_url(url, 5432 if url.startswith("postgres") else 3306) as proxy:
        yield proxy


@pytest.fixture
async def service(isolation_case: tuple[str, str], proxy: FaultProxy) -> AsyncIterator[Running]:
    # Only the central database goes through the proxy; tenant databases are reached directly.
    config = isolation_config(isolation_case, database_url=proxy.url_for(isolation_case[1]))
    async with running(config, [WARM, COLD]) as service:
        yield service


async def test_cold_lookups_answer_503_while_the_central_database_is_down_then_recover(
    isolation_case: tuple[str, str], proxy: FaultProxy, service: Running
) -> None:
    await service.tenancy.lookup.invalidate(COLD)
    assert await service.statuses(WARM) == [200]

    await proxy.refuse()
    proxy.cut()

    cold = await service.get(COLD)
    assert cold.status_code == 503
    assert cold.json() == GENERIC_503
    warm = await service.get(WARM)
    if isolation_case[0] == "database":
        assert warm.status_code == 200  # its own database is still up
    else:
        assert warm.status_code == 503
        assert warm.json() == GENERIC_503

    await proxy.restore()

    assert await service.statuses(COLD, 2) == [200, 200]
    assert await service.statuses(WARM, 2) == [200, 200]
    assert (await service.post(COLD, "after")).status_code == 200


async def test_connections_cut_between_requests_are_replaced_without_a_failure(
    proxy: FaultProxy, service: Running
) -> None:
    statuses = []
    for round_ in range(3):
        for identifier in (WARM, COLD):
            statuses.append((await service.post(identifier, f"r{round_}")).status_code)
        proxy.cut()
    assert proxy.cuts > 0
    # Pre-ping finds each cut connection on checkout and opens a new one.
    assert statuses == [200] * 6

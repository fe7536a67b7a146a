"""Server connections killed between requests (``pg_terminate_backend``): pre-ping recovers.

Only this test's own backends are terminated: those connected to its test database or to its
tenant databases, never another session on the shared server. With ``database_pool_pre_ping`` the
pool notices the dead connections on checkout and replaces them, so no request fails; without it,
the first request on a dead connection is a clean 503 (never a 500) and the next one succeeds.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.faults import GENERIC_503, running

TENANTS = ["termalpha", "termbravo"]

CASES = [
    pytest.param(("row", "postgres"), id="row"),
    pytest.param(("schema", "postgres"), id="schema"),
    pytest.param(("database", "postgres"), id="database"),
]

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("isolation_case", CASES, indirect=True),
]


async def terminate_own_backends(url: str) -> int:
    """Terminate every backend of the test database and its tenant databases but this one."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            killed = await conn.scalars(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() "
                    "AND (datname = :database OR datname LIKE :tenants)"
                ),
                {
                    "database": make_url(url).database,
                    "tenants": TEST_STORAGE_PREFIX.replace("_", "\\_") + "%",
                },
            )
            return sum(1 for ok in killed if ok)
    finally:
        await engine.dispose()


async def test_requests_after_terminated_backends_succeed_with_pre_ping(
    isolation_case: tuple[str, str],
) -> None:
    config = isolation_config(isolation_case, database_pool_pre_ping=True)
    async with running(config, TENANTS) as service:
        for identifier in TENANTS:
            assert await service.statuses(identifier, 2) == [200, 200]

        assert await terminate_own_backends(isolation_case[1]) > 0

        for identifier in TENANTS:
            assert await service.statuses(identifier, 2) == [200, 200]
        assert (await service.post("termalpha", "after")).status_code == 200


async def test_without_pre_ping_a_dead_connection_is_a_503_then_the_pool_recovers(
    isolation_case: tuple[str, str],
) -> None:
    config = isolation_config(isolation_case, database_pool_pre_ping=False)
    async with running(config, TENANTS) as service:
        for identifier in TENANTS:
            assert await service.statuses(identifier, 2) == [200, 200]

        assert await terminate_own_backends(isolation_case[1]) > 0

        responses = [await service.get(identifier) for identifier in TENANTS * 2]
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 503}, statuses
        assert 503 in statuses
        assert statuses[-len(TENANTS) :] == [200] * len(TENANTS)
        assert all(r.json() == GENERIC_503 for r in responses if r.status_code == 503)

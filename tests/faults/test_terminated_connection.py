"""Server connections killed between requests (``pg_terminate_backend``): no request fails.

Only this test's own backends are terminated: those connected to its test database or to its
tenant databases, never another session on the shared server. With ``database_pool_pre_ping`` the
pool replaces, on checkout, connections the client has seen closed. A dead connection it has not
seen (no pre-ping, or a kill a moment before the checkout) fails the transaction's first
statement, which a tenant session runs once more on a new connection when nothing of the session
is pending. A write with pending changes is not repeated: a clean 503 (never a 500), and the next
request succeeds.
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


async def test_without_pre_ping_a_read_on_a_dead_connection_is_retried_a_write_is_a_503(
    isolation_case: tuple[str, str],
) -> None:
    config = isolation_config(isolation_case, database_pool_pre_ping=False)
    async with running(config, TENANTS) as service:
        for identifier in TENANTS:
            assert await service.statuses(identifier, 2) == [200, 200]

        assert await terminate_own_backends(isolation_case[1]) > 0
        statuses = [(await service.get(identifier)).status_code for identifier in TENANTS * 2]
        assert statuses == [200] * 2 * len(TENANTS)

        assert await terminate_own_backends(isolation_case[1]) > 0
        written = await service.post("termalpha", "after the kill")
        assert written.status_code in (200, 503)
        if written.status_code == 503:
            assert written.json() == GENERIC_503
        assert (await service.post("termalpha", "again")).status_code == 200

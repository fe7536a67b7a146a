"""One tenant's storage gone or unreachable: only that tenant fails, the others keep working.

* Database isolation, the tenant's database server unreachable (its explicit URL goes through a
  `FaultProxy` that refuses and cuts): that tenant gets the generic 503, then recovers on its own.
* Database isolation, the tenant's database gone (its sessions ended, as ``DROP DATABASE ... WITH
  (FORCE)`` ends them, so the pool has to reconnect and cannot): 503 for that tenant.
* Schema isolation, the tenant's schema dropped: its tables are missing, which is what a
  programming error looks like, so the app's error (500) stands; the tenant never falls through
  to a table of the same name in ``public``, and no other tenant notices.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import GENERIC_503, admin_execute, running
from tests.support.polling import eventually
from tests.support.services import DISCARDED_PREFIX

HEALTHY = ["storealpha", "storebravo"]
BROKEN = "storebroken"


def quoted(url: str, name: str) -> str:
    return f'"{name}"' if url.startswith("postgres") else f"`{name}`"


@pytest.mark.parametrize(
    "isolation_case",
    [
        pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="postgres"),
        pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="mysql"),
    ],
    indirect=True,
)
async def test_an_unreachable_tenant_database_fails_only_that_tenant(
    isolation_case: tuple[str, str],
) -> None:
    _, url = isolation_case
    # A database the operator made, on a "server" (the proxy) that can go away on its own.
    name = f"{TEST_STORAGE_PREFIX}unreachable"
    await admin_execute(url, f"CREATE DATABASE {quoted(url, name)}")
    async with FaultProxy.for_url(url, 5432 if url.startswith("postgres") else 3306) as proxy:
        own_url = make_url(proxy.url_for(url)).set(database=name)
        urls = {BROKEN: own_url.render_as_string(hide_password=False)}
        async with running(
            isolation_config(isolation_case), [*HEALTHY, BROKEN], database_urls=urls
        ) as service:
            assert await service.statuses(BROKEN) == [200]

            await proxy.refuse()
            proxy.cut()

            broken = await service.get(BROKEN)
            assert broken.status_code == 503
            assert broken.json() == GENERIC_503
            for identifier in HEALTHY:
                assert await service.statuses(identifier, 2) == [200, 200]
                assert (await service.post(identifier, "during")).status_code == 200

            await proxy.restore()

            assert await service.statuses(BROKEN, 2) == [200, 200]


@pytest.mark.postgres
@pytest.mark.parametrize("isolation_case", [("database", "postgres")], indirect=True)
async def test_a_dropped_tenant_database_fails_only_that_tenant(
    isolation_case: tuple[str, str],
) -> None:
    _, url = isolation_case
    async with running(isolation_config(isolation_case), [*HEALTHY, BROKEN]) as service:
        for identifier in [*HEALTHY, BROKEN]:
            assert await service.statuses(identifier) == [200]
        tenant = await service.tenancy.get_tenant(BROKEN)
        assert tenant is not None
        assert tenant.storage_name is not None

        await make_disappear(url, tenant.storage_name)

        for _ in range(2):
            broken = await service.get(BROKEN)
            assert broken.status_code == 503
            assert broken.json() == GENERIC_503
        for identifier in HEALTHY:
            assert await service.statuses(identifier, 2) == [200, 200]
            assert (await service.post(identifier, "after")).status_code == 200


async def make_disappear(url: str, database: str) -> None:
    """End the sessions of the PostgreSQL ``database`` and take its name away.

    To the app this is a dropped database (its connections end, a new one is refused with
    "database does not exist"), without the checkpoint a DROP DATABASE waits for: seconds, or tens
    of seconds on a busy machine. The session's end drops it with the other discarded databases.
    """
    engine = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    discarded = f"{DISCARDED_PREFIX}{uuid.uuid4().hex[:16]}"
    try:
        async with engine.connect() as conn:

            async def renamed() -> bool:
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )
                # Refused while a terminated session is still exiting: tried again.
                await conn.execute(text(f'ALTER DATABASE "{database}" RENAME TO "{discarded}"'))
                return True

            await eventually(renamed, ignoring=(DBAPIError,), what=f"{database} renamed")
    finally:
        await engine.dispose()


@pytest.fixture
async def public_decoy(isolation_case: tuple[str, str]) -> AsyncIterator[None]:
    """An ``items`` table outside every tenant schema, holding a row no tenant may ever see."""
    _, url = isolation_case
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100), "
                    "tenant_id VARCHAR(64))"
                )
            )
            await conn.execute(text("INSERT INTO items VALUES (1, 'PUBLIC-DECOY', NULL)"))
        yield
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "isolation_case",
    [
        pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="postgres"),
        pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="mysql"),
    ],
    indirect=True,
)
async def test_a_dropped_tenant_schema_fails_only_that_tenant_and_never_reads_public(
    isolation_case: tuple[str, str], public_decoy: None
) -> None:
    _, url = isolation_case
    async with running(isolation_config(isolation_case), [*HEALTHY, BROKEN]) as service:
        for identifier in [*HEALTHY, BROKEN]:
            assert await service.statuses(identifier) == [200]
        tenant = await service.tenancy.get_tenant(BROKEN)
        assert tenant is not None
        assert tenant.storage_name is not None
        drop = "DROP SCHEMA {} CASCADE" if url.startswith("postgres") else "DROP DATABASE {}"

        await admin_execute(url, drop.format(quoted(url, tenant.storage_name)), maintenance=False)

        for _ in range(2):
            broken = await service.get(BROKEN)
            # A missing table is the app's error, not an outage; and no decoy row in the body.
            assert broken.status_code == 500
            assert "PUBLIC-DECOY" not in broken.text
        for identifier in HEALTHY:
            assert await service.statuses(identifier, 2) == [200, 200]
            assert (await service.post(identifier, "after")).status_code == 200

"""A central database that refuses new connections: 503 for every lookup, never 500.

Real refusals, each at the moment the app needs a new connection (its pool is emptied first):

* PostgreSQL, too many clients (53300): the app's role gets ``CONNECTION LIMIT 0``;
* PostgreSQL, starting up (57P03): a `FaultProxy` answers the start-up message with the error a
  starting server sends;
* PostgreSQL and MariaDB, the handshake cut: the proxy closes each new connection at once;
* PostgreSQL and MariaDB, refused outright: the proxy stops listening;
* MariaDB, an account's ``MAX_USER_CONNECTIONS`` (1226): the app's user may open two connections
  and the test holds both.

A tenant that is not cached (its lookup reads the store) and a cached one (row isolation: its
data is in the central database) both get the generic 503, with the driver's error code in the
log; nothing escapes as a 500. Once the refusal ends both are served again. A missing tenants
table, by contrast, is a bug: 500, with the exception recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import empty_database
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import GENERIC_503, Running, admin_execute, running

WARM = "refusedwarm"
COLD = "refusedcold"
LIMITED = f"{TEST_STORAGE_PREFIX}limited"  # a role/user per test database: helpers never share
HOLD_ATTEMPTS = 200


@dataclass
class Refusal:
    """The app's central URL, and how to make that server refuse new connections and stop."""

    url: str
    refuse: Callable[[], Awaitable[None]]
    restore: Callable[[], Awaitable[None]]
    logged: str  # what the 503's log line names: the error code, or the exception's class


# Statements run in the test database itself, not the maintenance one.
admin = partial(admin_execute, maintenance=False)


@asynccontextmanager
async def postgres_role_limit(url: str) -> AsyncIterator[Refusal]:
    """The app connects as a role of its own, which ``CONNECTION LIMIT 0`` then refuses."""
    await admin(
        url,
        f"DROP ROLE IF EXISTS {LIMITED}",
        f"CREATE ROLE {LIMITED} LOGIN NOSUPERUSER",
        f"GRANT ALL ON SCHEMA public TO {LIMITED}",
    )
    try:
        yield Refusal(
            make_url(url).set(username=LIMITED).render_as_string(hide_password=False),
            lambda: admin(url, f"ALTER ROLE {LIMITED} CONNECTION LIMIT 0"),
            lambda: admin(url, f"ALTER ROLE {LIMITED} CONNECTION LIMIT -1"),
            "SQLSTATE 53300",
        )
    finally:
        await admin(
            url,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{LIMITED}'",
            f"DROP OWNED BY {LIMITED}",
            f"DROP ROLE {LIMITED}",
        )


@asynccontextmanager
async def mariadb_user_limit(url: str) -> AsyncIterator[Refusal]:
    """The app connects as a user with ``MAX_USER_CONNECTIONS 2``; the test holds both."""
    database = make_url(url).database
    account = f"'{LIMITED}'@'%'"
    await admin(
        url,
        f"DROP USER IF EXISTS {account}",
        f"CREATE USER {account} WITH MAX_USER_CONNECTIONS 2",
        f"GRANT ALL PRIVILEGES ON `{database}`.* TO {account}",
    )
    limited = make_url(url).set(username=LIMITED).render_as_string(hide_password=False)
    holder = create_async_engine(limited, poolclass=NullPool)
    held: list[AsyncConnection] = []

    async def hold_every_slot() -> None:
        # The server may still count the app's just-closed connection: retry until both held.
        for _ in range(HOLD_ATTEMPTS):
            try:
                held.append(await holder.connect())
            except OperationalError:
                continue
            if len(held) == 2:
                return
        raise AssertionError("could not take both of the user's connection slots")

    async def release() -> None:
        while held:
            await held.pop().close()

    try:
        yield Refusal(limited, hold_every_slot, release, "MySQL error 1226")
    finally:
        await release()
        await holder.dispose()
        await admin(url, f"DROP USER IF EXISTS {account}")


@asynccontextmanager
async def through_proxy(url: str, fault: str) -> AsyncIterator[Refusal]:
    async with FaultProxy.for_url(url, 5432 if url.startswith("postgres") else 3306) as proxy:

        async def refuse() -> None:
            if fault == "starting_up":
                proxy.greet_with_postgres_error("57P03", "the database system is starting up")
            elif fault == "handshake_cut":
                proxy.hang_up()
            else:
                await proxy.refuse()

        logged = {"starting_up": "SQLSTATE 57P03", "handshake_cut": "", "refused": ""}[fault]
        yield Refusal(proxy.url_for(url), refuse, proxy.restore, logged)


REFUSALS = [
    pytest.param(("postgres", "too_many_clients"), marks=pytest.mark.postgres, id="pg-53300"),
    pytest.param(("postgres", "starting_up"), marks=pytest.mark.postgres, id="pg-57P03"),
    pytest.param(("postgres", "handshake_cut"), marks=pytest.mark.postgres, id="pg-cut"),
    pytest.param(("postgres", "refused"), marks=pytest.mark.postgres, id="pg-refused"),
    pytest.param(("mysql", "too_many_clients"), marks=pytest.mark.mysql, id="mariadb-1226"),
    pytest.param(("mysql", "handshake_cut"), marks=pytest.mark.mysql, id="mariadb-cut"),
    pytest.param(("mysql", "refused"), marks=pytest.mark.mysql, id="mariadb-refused"),
]


@pytest.fixture
async def refusal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Refusal]:
    kind, fault = request.param
    async with empty_database(kind, tmp_path) as url:
        if fault != "too_many_clients":
            refusing = through_proxy(url, fault)
        elif kind == "postgres":
            refusing = postgres_role_limit(url)
        else:
            refusing = mariadb_user_limit(url)
        async with refusing as refusal:
            yield refusal


@pytest.fixture
async def service(refusal: Refusal) -> AsyncIterator[Running]:
    # Row isolation: a cached tenant's rows live in the refusing central database too. One pooled
    # connection, so the MariaDB user's two slots suffice.
    config = isolation_config(("row", refusal.url), database_pool_size=1, database_max_overflow=0)
    async with running(config, [WARM, COLD]) as service:
        yield service


@pytest.mark.parametrize("refusal", REFUSALS, indirect=True)
async def test_refused_connections_answer_503_cached_or_not_then_recover(
    refusal: Refusal, service: Running
) -> None:
    await service.tenancy.lookup.invalidate(COLD)
    assert await service.statuses(WARM) == [200]

    await service.tenancy.engine.dispose()  # from here on, every request needs a new connection
    await refusal.refuse()
    try:
        cold = await service.get(COLD)
        warm = await service.get(WARM)
    finally:
        await refusal.restore()

    report = service.failures.report()
    assert (cold.status_code, warm.status_code) == (503, 503), report
    assert cold.json() == warm.json() == GENERIC_503, report
    assert service.failures.escaped == [], report
    assert len(service.failures.unavailable) == 2, report
    assert all(refusal.logged in cause for cause in service.failures.unavailable), report

    assert await service.statuses(COLD, 2) == [200, 200], service.failures.report()
    assert await service.statuses(WARM, 2) == [200, 200], service.failures.report()


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("sqlite"),
    ],
)
async def test_a_missing_tenants_table_answers_500_with_the_error_recorded(
    database: str, tmp_path: Path
) -> None:
    async with empty_database(database, tmp_path) as url:
        config = isolation_config(("row", url))
        async with running(config, [WARM]) as service:
            async with service.tenancy.engine.begin() as conn:
                # The domains table refers to the tenants table: it goes first.
                await conn.execute(text("DROP TABLE tenancy_domains"))
                await conn.execute(text("DROP TABLE tenancy_tenants"))
            await service.tenancy.lookup.invalidate(WARM)

            response = await service.get(WARM)

            report = service.failures.report()
            assert response.status_code == 500, report
            assert service.failures.unavailable == [], report
            assert len(service.failures.escaped) == 1, report
            missing = {
                "postgres": "UndefinedTableError",
                "mysql": "1146",
                "sqlite": "no such table",
            }[database]
            assert missing in service.failures.escaped[0], report

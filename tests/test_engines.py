"""EngineFamily: engines for many databases of one server share one dialect, initialised once.

What a connection sends is recorded on the client: asyncpg's query logger sees the simple
queries (``BEGIN``, ``ROLLBACK``, the session reset), and SQLAlchemy's asyncpg adapter keeps
each statement it prepared on the connection (one prepared-statement round trip each). A
dialect's first-connect queries (server version, default schema, isolation level,
``standard_conforming_strings``) are prepared statements in a transaction of their own. The
databases here are named ``<test database>_family_*``; the module creates and drops them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from fastapi_tenancy import engines as engines_module
from fastapi_tenancy.engines import POSTGRES_SESSION_RESET, EngineFamily, PoolOptions, create_engine
from tests.support.services import POSTGRES_URL, require_server

pytestmark = pytest.mark.postgres
# Named after the test database, so suites run at once on one server (each on its own test
# database) never drop each other's.
RUN = make_url(POSTGRES_URL).database or "test"
DATABASES = [f"{RUN}_family_{i}" for i in range(3)]
# What one connection sends for `SELECT 1` in a transaction that rolls back at check-in.
SESSION = ["BEGIN;", "ROLLBACK;", POSTGRES_SESSION_RESET]


def url(database: str) -> str:
    return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


def admin() -> AsyncEngine:
    return create_async_engine(url("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def databases() -> AsyncIterator[list[str]]:
    require_server("postgres", POSTGRES_URL, 5432)
    engine = admin()
    async with engine.connect() as conn:
        for name in DATABASES:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield DATABASES
    async with engine.connect() as conn:
        for name in DATABASES:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


@dataclass
class Sent:
    """What the connections one engine opened sent: simple queries and prepared statements."""

    connects: int = 0
    simple: list[str] = field(default_factory=list)
    drivers: list[Any] = field(default_factory=list)

    def prepared(self) -> list[str]:
        # The adapter's cache of the statements it prepared on each connection.
        return [sql for driver in self.drivers for sql in driver._prepared_statement_cache]

    async def settle(self) -> None:
        await asyncio.sleep(0.05)  # asyncpg hands query-log records to the loop (call_soon)


def record(engine: AsyncEngine) -> Sent:
    sent = Sent()

    def connected(dbapi_connection: Any, _record: Any) -> None:
        sent.connects += 1
        sent.drivers.append(dbapi_connection)
        dbapi_connection.driver_connection.add_query_logger(
            lambda logged: sent.simple.append(logged.query)
        )

    # First among the connect hooks: it sees whatever the others (the dialect's) send.
    event.listen(engine.sync_engine, "connect", connected, insert=True)
    return sent


async def select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_new_engine_of_a_known_server_connects_without_the_dialects_queries(
    databases: list[str],
) -> None:
    family = EngineFamily(pool_size=2, max_overflow=0)
    engines = [family(url(name)) for name in databases]
    for engine in engines:
        sent = record(engine)
        await select_one(engine)
        await sent.settle()
        assert sent.connects == 1
        assert sent.simple == SESSION
        assert [sql.strip() for sql in sent.prepared()] == ["SELECT 1"]
    assert family.initialisations == 1
    for engine in engines:
        await engine.dispose()


async def test_an_engine_of_its_own_runs_the_dialects_queries_on_its_first_connection(
    databases: list[str],
) -> None:
    # The contrast that the family's count above could fail against.
    engine = create_engine(url(databases[0]), pool_size=2, max_overflow=0)
    sent = record(engine)
    await select_one(engine)
    await sent.settle()
    assert sent.simple == ["BEGIN;", "ROLLBACK;", *SESSION]
    assert len(sent.prepared()) > 1
    await engine.dispose()


async def test_concurrent_first_connections_share_one_initialised_dialect(
    databases: list[str],
) -> None:
    family = EngineFamily(pool_size=2, max_overflow=0)
    engines = [family(url(name)) for name in databases]
    await asyncio.gather(*(select_one(engine) for engine in engines))
    assert family.initialisations == 1
    dialect = engines[0].dialect
    assert dialect.server_version_info is not None
    for engine in engines:
        assert engine.dialect is dialect
        assert engine.sync_engine._compiled_cache is engines[0].sync_engine._compiled_cache
        await engine.dispose()


async def test_a_failed_first_connection_leaves_the_dialect_to_the_next(
    databases: list[str],
) -> None:
    family = EngineFamily(pool_size=2, max_overflow=0)
    missing = family(url(f"{RUN}_family_missing"))
    with pytest.raises(Exception, match=f"{RUN}_family_missing"):
        await select_one(missing)
    assert family.initialisations == 0
    engine = family(url(databases[0]))
    await select_one(engine)
    assert family.initialisations == 1
    await missing.dispose()
    await engine.dispose()


async def test_engines_of_other_servers_or_users_get_dialects_of_their_own(
    databases: list[str],
) -> None:
    family = EngineFamily(pool_size=2, max_overflow=0)
    first = family(url(databases[0]))
    other_user = family(make_url(url(databases[1])).set(username="h5_nobody").render_as_string())
    assert other_user.dialect is not first.dialect
    assert family(url(databases[1])).dialect is first.dialect
    sqlite = family("sqlite+aiosqlite:///:memory:")
    assert sqlite.dialect.name == "sqlite"
    for engine in (first, other_user, sqlite):
        await engine.dispose()


async def test_a_server_that_declined_ssl_is_not_asked_again_for_a_while(
    databases: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server runs without SSL: asyncpg's default ("prefer") asks, hears no, and
    # connects plainly. The family's next connections skip the question, until the recheck.
    require_server("postgres", POSTGRES_URL, 5432)
    for name in ("PGSSLMODE", "PGSSLNEGOTIATION", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    family = EngineFamily(pool_size=2, max_overflow=0)
    engines = [family(url(name)) for name in databases]
    asked: list[object] = []

    def connecting(_dialect: Any, record: Any, _args: Any, params: dict[str, Any]) -> None:
        assert record is not None  # hooks get the pool's record, as create_engine's do
        asked.append(params.get("ssl", "prefer"))

    event.listen(engines[0].dialect, "do_connect", connecting)
    for engine in engines[:2]:
        await select_one(engine)
    # The first is the connection that initialises the dialect.
    assert asked == ["prefer", False, False]
    # With no time to remember the answer for, every connection asks.
    monkeypatch.setattr(engines_module, "PLAIN_SERVER_RECHECK_SECONDS", 0.0)
    forgetful = EngineFamily(pool_size=2, max_overflow=0)
    others = [forgetful(url(name)) for name in databases[:2]]
    event.listen(others[0].dialect, "do_connect", connecting)
    asked.clear()
    for engine in others:
        await select_one(engine)
    assert asked == ["prefer", "prefer", "prefer"]
    explicit = family(url(databases[0]) + "?ssl=disable")
    event.listen(explicit.dialect, "do_connect", connecting)
    await select_one(explicit)
    assert asked[-1] == "disable"
    for engine in (*engines, *others, explicit):
        await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(pid: int) -> None:
    """Terminate backend ``pid`` and wait until it has gone."""
    engine = admin()
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            gone = text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid")
            for _ in range(500):
                if await conn.scalar(gone, {"pid": pid}):
                    return
                await asyncio.sleep(0.01)
    finally:
        await engine.dispose()
    raise AssertionError(f"backend {pid} still running")


def terminate_while_the_loop_sleeps(pid: int) -> None:
    # In another thread with a loop of its own, while this loop is blocked: the server's
    # goodbye waits on the pooled connection's socket, unread by this loop.
    thread = threading.Thread(target=asyncio.run, args=(terminate(pid),))
    thread.start()
    thread.join()


@pytest.mark.parametrize("loop_saw_the_close", [True, False], ids=["read", "unread"])
async def test_a_connection_killed_on_the_server_is_replaced_at_checkout(
    databases: list[str], monkeypatch: pytest.MonkeyPatch, loop_saw_the_close: bool
) -> None:
    # Only the look at the client's side of the connection protects it here: a connection this
    # recent is never pinged for its idle time, and a plain engine has no statement retry.
    monkeypatch.setattr(engines_module, "PRE_PING_IDLE_SECONDS", float("inf"))
    engine = create_engine(url(databases[0]), pool_size=1, max_overflow=0)
    pids = [await backend_pid(engine)]
    for _ in range(3):
        if loop_saw_the_close:
            await terminate(pids[-1])
            await asyncio.sleep(0.05)
        else:
            terminate_while_the_loop_sleeps(pids[-1])
        pids.append(await backend_pid(engine))
    assert len(set(pids)) == len(pids)
    await engine.dispose()


async def test_a_quiet_recent_connection_is_checked_out_without_a_ping(
    databases: list[str],
) -> None:
    engine = create_engine(url(databases[0]), pool_size=1, max_overflow=0)
    sent = record(engine)
    await select_one(engine)
    await select_one(engine)
    await sent.settle()
    # The dialect's first-connect transaction, then two sessions on the one connection and no
    # ping between them (a ping is a transaction of its own).
    assert sent.connects == 1
    assert sent.simple == ["BEGIN;", "ROLLBACK;", *SESSION, *SESSION]
    await engine.dispose()


async def test_pool_options_are_taken_as_a_dataclass_keywords_or_both(
    databases: list[str],
) -> None:
    options = PoolOptions(pool_size=3, max_overflow=0, pool_timeout=7.0)
    engines = [
        create_engine(url(databases[0]), options),
        create_engine(url(databases[0]), pool_size=3, max_overflow=0, pool_timeout=7.0),
        create_engine(
            url(databases[0]),
            PoolOptions(pool_size=9),
            max_overflow=0,
            pool_size=3,
            pool_timeout=7.0,
        ),
        EngineFamily(options)(url(databases[1])),
        EngineFamily(pool_size=3, max_overflow=0, pool_timeout=7.0)(url(databases[1])),
    ]
    for engine in engines:
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool._max_overflow, pool.timeout()) == (3, 0, 7.0)
        await select_one(engine)
        await engine.dispose()
    with pytest.raises(TypeError):
        create_engine(url(databases[0]), pool_sise=3)

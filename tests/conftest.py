from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import hypothesis_profiles
from tests.support.pg_cluster import second_postgres as second_postgres  # a session fixture
from tests.support.redis_server import PrivateRedis
from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelGroup
from tests.support.services import (
    MYSQL_URL,
    POSTGRES_URL,
    REDIS_URL,
    XDIST_WORKER,
    create_worker_databases,
    drop_discarded_databases,
    require_server,
    reset_database,
)

settings.load_profile("tenancy")  # --hypothesis-profile=NAME (Hypothesis' plugin) still wins

# Workers of the default run (`-n auto`): the tests mostly wait on PostgreSQL, MariaDB and Redis,
# so more workers than the machine's two cores still pay (docs/testing.md has the measurements).
DEFAULT_WORKERS = 3


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads -n
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Without ``-n``, run as ``-n auto`` (`pytest_xdist_auto_num_workers` says how many workers).
    Not in ``addopts``: without pytest-xdist (``-p no:xdist``, or an install without the dev
    extra) the run is serial instead of refusing the option."""
    if XDIST_WORKER or not hasattr(config.option, "numprocesses"):
        return  # a worker runs its tests itself; or pytest-xdist is not loaded
    if config.option.numprocesses is None:
        config.option.numprocesses = "auto"


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it is loaded
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers ``-n auto`` starts: PYTEST_XDIST_AUTO_NUM_WORKERS, else 0 (a serial run in
    this process) when the command names test cases (``file.py::case``) or turns capturing off
    (``-s``: a worker's output never reaches the terminal), else `DEFAULT_WORKERS`."""
    chosen = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if chosen:
        return int(chosen)
    if any("::" in str(arg) for arg in config.args) or config.getoption("capture") == "no":
        return 0
    return DEFAULT_WORKERS


def pytest_sessionstart(session: pytest.Session) -> None:
    # A worker of a parallel run uses databases of its own (test -> test_gw0): create them before
    # any test or fixture needs them.
    asyncio.run(create_worker_databases())


def pytest_report_header() -> list[str]:
    return [
        f"hypothesis profiles: {', '.join(hypothesis_profiles.PROFILES)}; a failure prints its "
        "@reproduce_failure blob, and --hypothesis-seed=N replays a whole run",
        f"services: {POSTGRES_URL}, {MYSQL_URL}, {REDIS_URL}"
        + (f" (worker {XDIST_WORKER})" if XDIST_WORKER else ""),
    ]


@pytest.fixture(scope="session", autouse=True)
def _drop_discarded_databases() -> Iterator[None]:
    # Resets rename tenant databases out of the way (a rename needs no checkpoint); they are
    # dropped here, together.
    yield
    asyncio.run(drop_discarded_databases())


@pytest.fixture(autouse=True)
def _clean_tenancy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # TenancyConfig reads TENANCY_* variables and a .env file; tests start from the defaults.
    for name in list(os.environ):
        if name.startswith("TENANCY_") and not name.startswith("TENANCY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TENANCY_DATABASE_URL", "sqlite+aiosqlite:///:memory:")


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL for an empty database of the requested kind ("sqlite", "postgres" or "mysql")."""
    async with empty_database(getattr(request, "param", "sqlite"), tmp_path) as url:
        yield url


@pytest.fixture
async def isolation_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """``(strategy, database_url)`` for one row of ``tests.support.backends.ISOLATIONS``."""
    strategy, kind = request.param
    async with empty_database(kind, tmp_path) as url:
        yield strategy, url


@asynccontextmanager
async def empty_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}"
        return
    url = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL}[kind]
    require_server(kind, url, 5432 if kind == "postgres" else 3306)
    await reset_database(url)
    try:
        yield url
    finally:
        await reset_database(url)


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    """A ``redis-server`` of the test's own, which it may stop and start."""
    async with PrivateRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelGroup]:
    """A Sentinel group shared by the tests that only read and write through it (no failover)."""
    with RedisSentinelGroup() as group:
        yield group


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A 3-master Cluster shared by the tests that only read and write through it (no failover)."""
    with RedisClusterNodes() as cluster:
        yield cluster


@pytest.fixture
def redis_any_url(request: pytest.FixtureRequest) -> str:
    """The URL of the topology named by the indirect parameter (see ``REDIS_TOPOLOGIES``)."""
    if request.param == "server":
        require_server("Redis", REDIS_URL, 6379)
        return REDIS_URL
    topology: RedisSentinelGroup | RedisClusterNodes = request.getfixturevalue(
        f"redis_{request.param}"
    )
    return topology.url

"""Real database and cache servers for the tests: where they are, whether they are up, and resets.

URLs come from TENANCY_TEST_POSTGRES_URL, TENANCY_TEST_MYSQL_URL and TENANCY_TEST_REDIS_URL with
loopback defaults. A test that needs a server that is down is skipped with the reason, unless
TENANCY_TEST_REQUIRE_SERVICES=1, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import uuid
from functools import cache

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

# "gw0", "gw1", ... in the processes of a parallel run (pytest-xdist), "" in a serial one.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
# Redis has databases 0..15 (its default `databases 16`).
REDIS_DATABASES = 16


def worker_database_url(url: str, worker: str = XDIST_WORKER) -> str:
    """``url`` with the worker's own database: ``test`` -> ``test_gw0`` (unchanged when serial).

    Workers of one parallel run never share a database, so each resets its own freely; the
    worker database is created at worker start (`create_worker_databases`) and kept for the next
    run. Already suffixed URLs stay as they are.
    """
    if not worker:
        return url
    parsed = make_url(url)
    name = parsed.database or "test"
    if name.endswith(f"_{worker}"):
        return url
    return parsed.set(database=f"{name}_{worker}").render_as_string(hide_password=False)


def worker_redis_url(url: str, worker: str = XDIST_WORKER) -> str:
    """``url`` with the worker's own Redis database: the configured one + worker index + 1.

    A run on ``redis://host/12`` with three workers uses databases 13, 14 and 15 (the configured
    one stays unused); one that would need a database above 15 stops with an error saying so.
    """
    if not worker:
        return url
    head, _, tail = url.partition("://")
    authority, _, rest = tail.partition("/")
    path, question, query = rest.partition("?")
    base = int(path) if path.isdigit() else 0
    database = base + int(worker.removeprefix("gw")) + 1
    if database >= REDIS_DATABASES:
        raise RuntimeError(
            f"TENANCY_TEST_REDIS_URL {url!r}: worker {worker} needs Redis database {database}, "
            f"above {REDIS_DATABASES - 1}; use a lower database or fewer workers (-n)"
        )
    return f"{head}://{authority}/{database}{question}{query}"


BASE_POSTGRES_URL = os.environ.get(
    "TENANCY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BASE_MYSQL_URL = os.environ.get(
    "TENANCY_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test"
)
POSTGRES_URL = worker_database_url(BASE_POSTGRES_URL)
MYSQL_URL = worker_database_url(BASE_MYSQL_URL)
REDIS_URL = worker_redis_url(os.environ.get("TENANCY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
REQUIRE_SERVICES = os.environ.get("TENANCY_TEST_REQUIRE_SERVICES") == "1"


def _storage_prefix() -> str:
    # Tenant schemas and databases the tests create start with this, so resets find them; runs
    # against differently named test databases (test, test_h8, ...) never drop each other's, nor
    # do the workers of one parallel run (test_h8_gw0 -> tt_h8gw0_).
    name = make_url(BASE_POSTGRES_URL).database or "test"
    # The plain "test" database gets a suffix too: a bare "tt_" prefix would match, and drop, the
    # "tt_h7_..." names of a run against another database.
    suffix = re.sub(r"[^a-z0-9]", "", name.lower().removeprefix("test"))[:8]
    # The worker tag is never truncated: workers' prefixes differ even for long database names.
    return f"tt_{suffix + XDIST_WORKER or '0'}_"


TEST_STORAGE_PREFIX = _storage_prefix()
# Tenant databases a reset moved out of the way, dropped at the end of the session. Not under
# TEST_STORAGE_PREFIX: nothing that looks for the tests' storage (or orphans of it) sees them.
DISCARDED_PREFIX = f"discarded_{TEST_STORAGE_PREFIX}"
# Connections one reset uses to drop databases: well under the servers' max_connections (100),
# which the test in progress and the other runs sharing the server also need.
_PARALLEL_DROPS = 8
_RENAME_ATTEMPTS = 20


async def create_worker_databases() -> None:
    """Create this worker's PostgreSQL and MariaDB databases if missing (a no-op when serial)."""
    if not XDIST_WORKER:
        return
    for url, default_port in ((POSTGRES_URL, 5432), (MYSQL_URL, 3306)):
        parsed = make_url(url)
        if not _reachable(parsed.host or "127.0.0.1", parsed.port or default_port):
            continue  # its tests skip, or fail when services are required
        name = parsed.database
        if parsed.get_backend_name() == "postgresql":
            admin = create_async_engine(
                parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
            try:
                async with admin.connect() as conn:
                    exists = await conn.scalar(
                        text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                    )
                    if not exists:
                        await conn.execute(text(f'CREATE DATABASE "{name}"'))
            finally:
                await admin.dispose()
        else:
            # information_schema: every account may connect to it.
            admin = create_async_engine(
                parsed.set(database="information_schema"), poolclass=NullPool
            )
            try:
                async with admin.begin() as conn:
                    await conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
            finally:
                await admin.dispose()


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@cache
def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def redis_binary() -> str:
    """``redis-server``, for tests that run Redis servers of their own (to kill, or to make a
    Sentinel group or a Cluster); a skip (a failure when services are required) without it."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed; the tests that run their own Redis need it"
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


def require_server(name: str, url: str, default_port: int) -> None:
    """Skip (or, when services are required, fail) unless the server behind ``url`` answers."""
    parsed = make_url(url) if "://" in url and not url.startswith("redis") else None
    if parsed is not None:
        host, port = parsed.host or "127.0.0.1", parsed.port or default_port
    else:
        rest = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port_text = rest.partition(":")
        port = int(port_text or default_port)
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port} (set its TENANCY_TEST_*_URL)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and TENANCY_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


async def reset_database(url: str) -> None:
    """Drop everything the tests may have created in the database behind ``url``."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return
    engine = create_async_engine(url, poolclass=NullPool)
    doomed: list[str] = []
    try:
        async with engine.begin() as conn:
            if backend == "postgresql":
                schemas = await conn.execute(
                    text(
                        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                        "AND nspname NOT IN ('information_schema', 'public')"
                    )
                )
                names = ", ".join(f'"{schema}"' for (schema,) in schemas)
                if names:
                    await conn.execute(text(f"DROP SCHEMA {names} CASCADE"))
                await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
            else:
                databases = await conn.execute(
                    text(
                        "SELECT schema_name FROM information_schema.schemata "
                        "WHERE schema_name LIKE :prefix"
                    ),
                    {"prefix": _like_prefix(TEST_STORAGE_PREFIX)},
                )
                doomed = [database for (database,) in databases]
                tables = await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = DATABASE()"
                    )
                )
                names = ", ".join(f"`{table}`" for (table,) in tables)
                if names:
                    # One statement: each DROP TABLE of its own waits for its own disk sync.
                    await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                    await conn.execute(text(f"DROP TABLE {names}"))
                    await conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    finally:
        await engine.dispose()
    if backend == "postgresql":
        await discard_test_databases(url)
    elif doomed:
        await drop_databases(url, [f"`{database}`" for database in doomed])


async def discard_test_databases(url: str) -> None:
    """Move every tenant database next to the PostgreSQL test database ``url`` out of the way.

    Database-per-tenant tests create whole databases beside the test database. A DROP DATABASE
    waits for a checkpoint (seconds on a busy machine, the largest single cost of those tests), a
    rename does not: each is renamed out of the way here, and the discarded ones are dropped
    together, sharing checkpoints, when the session ends (`drop_discarded_databases`).
    """
    admin_url = make_url(url).set(database="postgres")
    admin = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    stuck: list[str] = []
    try:
        async with admin.connect() as conn:
            for name in await _databases_named(conn, TEST_STORAGE_PREFIX):
                if not await _rename_away(conn, name):
                    stuck.append(f'"{name}"')
    finally:
        await admin.dispose()
    await drop_databases(admin_url.render_as_string(hide_password=False), stuck, force=True)


async def _rename_away(conn: AsyncConnection, name: str) -> bool:
    """Rename the database ``name`` to a discarded one; ``False`` if its clients stay connected."""
    discarded = f"{DISCARDED_PREFIX}{uuid.uuid4().hex[:16]}"
    for _ in range(_RENAME_ATTEMPTS):
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        try:
            await conn.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{discarded}"'))
        except DBAPIError:
            # Terminated backends take a moment to exit, and a pool may have connected again.
            await asyncio.sleep(0.05)
        else:
            return True
    return False


async def drop_discarded_databases() -> None:
    """Drop the databases the resets of this test database renamed out of the way."""
    parsed = make_url(POSTGRES_URL)
    if not _reachable(parsed.host or "127.0.0.1", parsed.port or 5432):
        return
    admin_url = parsed.set(database="postgres")
    admin = create_async_engine(admin_url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            doomed = [f'"{name}"' for name in await _databases_named(conn, DISCARDED_PREFIX)]
    finally:
        await admin.dispose()
    await drop_databases(admin_url.render_as_string(hide_password=False), doomed, force=True)


async def _databases_named(conn: AsyncConnection, prefix: str) -> list[str]:
    """The PostgreSQL databases whose names start with ``prefix``."""
    names = await conn.execute(
        text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
        {"prefix": _like_prefix(prefix)},
    )
    return [name for (name,) in names.all()]


def _like_prefix(prefix: str) -> str:
    return prefix.replace("_", "\\_") + "%"


async def drop_databases(admin_url: str, quoted_names: list[str], *, force: bool = False) -> None:
    """``DROP DATABASE`` each of ``quoted_names`` on the server behind ``admin_url``, at once.

    A PostgreSQL DROP DATABASE waits for a checkpoint (about a second on a busy machine, the
    largest single cost of the database-isolation tests): drops on separate connections share
    one checkpoint, so ten databases go in about the time of one.
    """
    if not quoted_names:
        return
    engine = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    gate = asyncio.Semaphore(_PARALLEL_DROPS)
    suffix = " WITH (FORCE)" if force else ""

    async def drop(name: str) -> None:
        async with gate, engine.connect() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}{suffix}"))

    try:
        await asyncio.gather(*(drop(name) for name in quoted_names))
    finally:
        await engine.dispose()

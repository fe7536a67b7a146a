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

POSTGRES_URL = os.environ.get(
    "TENANCY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("TENANCY_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("TENANCY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("TENANCY_TEST_REQUIRE_SERVICES") == "1"


def _storage_prefix() -> str:
    # Tenant schemas and databases the tests create start with this, so resets find them; runs
    # against differently named test databases (test, test_h8, ...) never drop each other's.
    name = make_url(POSTGRES_URL).database or "test"
    # The plain "test" database gets a suffix too: a bare "tt_" prefix would match, and drop, the
    # "tt_h7_..." names of a run against another database.
    suffix = re.sub(r"[^a-z0-9]", "", name.lower().removeprefix("test"))[:8] or "0"
    return f"tt_{suffix}_"


TEST_STORAGE_PREFIX = _storage_prefix()
# Tenant databases a reset moved out of the way, dropped at the end of the session. Not under
# TEST_STORAGE_PREFIX: nothing that looks for the tests' storage (or orphans of it) sees them.
DISCARDED_PREFIX = f"discarded_{TEST_STORAGE_PREFIX}"
# Connections one reset uses to drop databases: well under the servers' max_connections (100),
# which the test in progress and the other runs sharing the server also need.
_PARALLEL_DROPS = 8
_RENAME_ATTEMPTS = 20


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

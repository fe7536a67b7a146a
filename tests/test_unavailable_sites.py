"""One meaning of "storage unavailable" wherever it is answered, per error kind and backend.

Each case makes a real server (or SQLite) fail in one way at one of the three places a storage
failure becomes an answer, and checks the answer:

* the tenant store (a lookup), the provisioning of a tenant database, and a tenant session;
* a missing table is a bug, never an outage: the driver's error propagates unchanged;
* a refused connection, a connection the server dropped, and a pool with no free connection are
  outages: `ServiceUnavailable` (a 503), with the driver's error as its cause.

Combinations that cannot happen are left out: SQLite has no connection to drop, and
provisioning opens a one-off connection with no pool.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import ServiceUnavailable, Tenancy, TenancyConfig
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.isolation.tables import TABLE_KIND_KEY, TenantTables
from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.store import SQLAlchemyTenantStore
from tests.conftest import empty_database
from tests.store.test_sqlalchemy import join_aiosqlite_workers
from tests.support.fault_proxy import FaultProxy
from tests.support.models import Base

SITES = ("store", "provisioning", "session")
KINDS = {"missing_table": False, "refused": True, "dropped": True, "pool_timeout": True}
MARKS = {"postgres": [pytest.mark.postgres], "mysql": [pytest.mark.mysql], "sqlite": []}
IMPOSSIBLE = {
    ("provisioning", "pool_timeout"),  # a one-off NullPool connection
}

# How a test finds and kills its own server connection.
OWN_CONNECTION = {"postgres": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
KILL = {"postgres": "SELECT pg_terminate_backend({})", "mysql": "KILL {}"}


def cases() -> list[Any]:
    params = []
    for site, kind, backend in itertools.product(SITES, KINDS, MARKS):
        if (site, kind) in IMPOSSIBLE or (backend == "sqlite" and kind == "dropped"):
            continue
        params.append(
            pytest.param(site, kind, backend, marks=MARKS[backend], id=f"{site}-{kind}-{backend}")
        )
    return params


def refused_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":  # SQLite's refusal: a database file that cannot be opened
        return f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'directory.db'}"
    scheme = {"postgres": "postgresql+asyncpg", "mysql": "mysql+aiomysql"}[backend]
    return f"{scheme}://app:secret@127.0.0.1:1/x"  # nothing listens on port 1


async def kill(url: str, backend: str, connection_id: int) -> None:
    admin = create_async_engine(url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(KILL[backend].format(int(connection_id))))
    finally:
        await admin.dispose()


async def own_connection(engine: AsyncEngine, backend: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(OWN_CONNECTION[backend]))).scalar_one())


@asynccontextmanager
async def holding_the_only_connection(engine: AsyncEngine) -> AsyncIterator[None]:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        yield


async def at_the_store(kind: str, backend: str, url: str, tmp_path: Path) -> None:
    target = refused_url(backend, tmp_path) if kind == "refused" else url
    config = TenancyConfig(
        database_url=target,
        database_pool_size=1,
        database_max_overflow=0,
        database_pool_timeout=0.2,
        database_pool_pre_ping=False,  # a pre-ping would replace a dropped connection unseen
    )
    async with AsyncExitStack() as stack:
        engine = central_engine(config)
        stack.push_async_callback(engine.dispose)
        store = SQLAlchemyTenantStore(engine)
        if kind != "missing_table" and kind != "refused":
            await store.initialize()
        if kind == "dropped":
            await kill(url, backend, await own_connection(engine, backend))  # the pooled one
        if kind == "pool_timeout":
            await stack.enter_async_context(holding_the_only_connection(engine))
        await store.get_by_identifier("acme")


def run_after_create(statement: str) -> Callable[..., None]:
    def run(_table: Table, connection: Connection, **_kw: Any) -> None:
        connection.execute(text(statement))

    return run


async def at_provisioning(kind: str, backend: str, url: str, tmp_path: Path) -> None:
    # The tenant's own database, named by an explicit URL: provisioning creates its tables.
    target = refused_url(backend, tmp_path) if kind == "refused" else url
    metadata = MetaData()
    # A tenant table (a plain table is shared: it lives in the central database, not here).
    table = Table(
        "provisioned",
        metadata,
        Column("id", Integer, primary_key=True),
        info={TABLE_KIND_KEY: "tenant"},
    )
    if kind == "missing_table":
        missing = "INSERT INTO no_such_table VALUES (1)"
        event.listen(table, "after_create", run_after_create(missing))
    if kind == "dropped":
        own = OWN_CONNECTION[backend].replace("SELECT ", "")
        event.listen(table, "after_create", run_after_create(KILL[backend].format(own)))
    isolation = DatabaseIsolation(TenantTables(metadata), engine_factory=create_async_engine)
    tenant = Tenant(identifier="acme", storage_name="t_acme", database_url=target)
    try:
        await isolation.provision(tenant)
    finally:
        await isolation.close()


async def at_a_session(kind: str, backend: str, url: str, tmp_path: Path) -> None:
    # Row isolation: the tenant's rows live in the central database, reached through its pool.
    async with AsyncExitStack() as stack:
        proxy = None
        if kind == "refused" and backend != "sqlite":
            port = 5432 if backend == "postgres" else 3306
            proxy = await stack.enter_async_context(FaultProxy.for_url(url, port))
            url = proxy.url_for(url)
        elif kind == "refused":
            (tmp_path / "moving").mkdir()
            url = f"sqlite+aiosqlite:///{tmp_path / 'moving' / 'central.db'}"
        config = TenancyConfig(
            database_url=url,
            tenant_metadata=Base.metadata,
            database_pool_size=1,
            database_max_overflow=0,
            database_pool_timeout=0.2,
        )
        tenancy = await stack.enter_async_context(Tenancy(config))
        tenant = await tenancy.create_tenant("acme")
        if kind == "refused":
            # The central database stops accepting connections once the tenant exists.
            await tenancy.engine.dispose()
            if proxy is not None:
                await proxy.refuse()
            else:
                (tmp_path / "moving").rename(tmp_path / "moved")
        if kind == "pool_timeout":
            await stack.enter_async_context(holding_the_only_connection(tenancy.engine))
        async with tenancy.tenant_session(tenant) as session:
            if kind == "dropped":
                pid = (await session.execute(text(OWN_CONNECTION[backend]))).scalar_one()
                await kill(url, backend, pid)
            table = "no_such_table" if kind == "missing_table" else "items"
            await session.execute(text(f"SELECT * FROM {table}"))


SITE_OPERATIONS: dict[str, Callable[[str, str, str, Path], Awaitable[None]]] = {
    "store": at_the_store,
    "provisioning": at_provisioning,
    "session": at_a_session,
}


@pytest.mark.parametrize(("site", "kind", "backend"), cases())
async def test_storage_failures_mean_the_same_at_every_site(
    site: str, kind: str, backend: str, tmp_path: Path
) -> None:
    async with empty_database(backend, tmp_path) as url:
        operation = SITE_OPERATIONS[site](kind, backend, url, tmp_path)
        try:
            if KINDS[kind]:
                with pytest.raises(ServiceUnavailable) as outage:
                    await operation
                assert outage.value.__cause__ is not None
                assert is_unavailable(outage.value.__cause__)
            else:
                with pytest.raises(DBAPIError) as bug:
                    await operation
                assert not is_unavailable(bug.value)
        finally:
            await join_aiosqlite_workers()  # a failed SQLite connect reports back late

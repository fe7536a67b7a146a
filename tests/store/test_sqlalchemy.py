"""`SQLAlchemyTenantStore` beyond the contract: error translation, engine ownership, races."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.engines import redact_url
from fastapi_tenancy.exceptions import ServiceUnavailable
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.store import SQLAlchemyTenantStore, tenants_table
from tests.support.backends import all_databases

PASSWORD = "hunter2-Sup3rSecret"
UNREACHABLE = [
    pytest.param(f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:1/x", id="postgres"),
    pytest.param(f"mysql+aiomysql://root:{PASSWORD}@127.0.0.1:1/x", id="mysql"),
    pytest.param("sqlite+aiosqlite:///{tmp_path}/no/such/directory/tenants.db", id="sqlite"),
]

Operation = Callable[[SQLAlchemyTenantStore], Awaitable[object]]
OPERATIONS: dict[str, Operation] = {
    "initialize": lambda store: store.initialize(),
    "get": lambda store: store.get("0" * 32),
    "get_by_identifier": lambda store: store.get_by_identifier("acme"),
    "add": lambda store: store.add(Tenant(identifier="acme")),
    "update": lambda store: store.update(Tenant(identifier="acme")),
    "delete": lambda store: store.delete("0" * 32),
    "list": lambda store: store.list(include_deleted=True),
}


async def join_aiosqlite_workers() -> None:
    """Wait for aiosqlite's worker threads to finish while the event loop is still open.

    After a failed connect the worker reports back to the loop later; when the test's loop has
    closed by then, the thread raises "Event loop is closed" (omnilib/aiosqlite#241).
    """
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)


@pytest.mark.parametrize("url", UNREACHABLE)
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_unreachable_database_raises_service_unavailable_without_the_password(
    url: str, operation: str, tmp_path: Path
) -> None:
    url = url.format(tmp_path=tmp_path)
    engine = central_engine(TenancyConfig(database_url=url, database_pool_timeout=5))
    store = SQLAlchemyTenantStore(engine)
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await OPERATIONS[operation](store)
    finally:
        await engine.dispose()
        await join_aiosqlite_workers()

    assert caught.value.__cause__ is not None
    assert PASSWORD not in str(caught.value)
    assert redact_url(url) in str(caught.value)


@all_databases
async def test_close_leaves_the_engine_open(database_url: str) -> None:
    engine = central_engine(TenancyConfig(database_url=database_url))
    pool = engine.sync_engine.pool
    try:
        store = SQLAlchemyTenantStore(engine)
        await store.initialize()
        await store.close()

        assert engine.sync_engine.pool is pool
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()


@all_databases
async def test_concurrent_initialize_from_two_processes_creates_one_table(
    database_url: str,
) -> None:
    engines = [central_engine(TenancyConfig(database_url=database_url)) for _ in range(2)]
    try:
        stores = [SQLAlchemyTenantStore(engine) for engine in engines]
        await asyncio.gather(*(store.initialize() for store in stores))

        tenant = await stores[0].add(Tenant(identifier="acme"))
        assert await stores[1].get_by_identifier("acme") == tenant
        async with engines[0].connect() as conn:
            names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert names.count(tenants_table.name) == 1
    finally:
        for engine in engines:
            await engine.dispose()


@all_databases
async def test_timestamps_come_back_in_utc_and_naive_ones_are_read_as_utc(
    database_url: str,
) -> None:
    engine = central_engine(TenancyConfig(database_url=database_url))
    try:
        store = SQLAlchemyTenantStore(engine)
        await store.initialize()
        india = timezone(timedelta(hours=5, minutes=30))
        created = datetime(2022, 1, 2, 3, 4, 5, 600_007, tzinfo=india)
        naive = datetime(2023, 6, 7, 8, 9, 10, 11)
        added = await store.add(
            Tenant(identifier="acme", created_at=created, updated_at=naive, deleted_at=naive)
        )

        stored = await store.get(added.id)

        assert stored == added
        assert stored.created_at == created
        assert stored.updated_at == naive.replace(tzinfo=UTC)
        for value in (stored.created_at, stored.updated_at, stored.deleted_at):
            assert value is not None
            assert value.tzinfo is UTC
    finally:
        await engine.dispose()

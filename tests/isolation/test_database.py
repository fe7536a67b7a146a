"""Database isolation: a database per tenant, bounded engines, and no connection left behind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import ConfigurationError, ServiceUnavailable, Tenancy, TenancyConfig
from fastapi_tenancy.isolation import DatabaseIsolation
from tests.support import apps
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.models import Item

postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        make_url(database_url).set(database="postgres"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    yield engine
    await engine.dispose()


async def tenant_connections(admin: AsyncEngine) -> int:
    async with admin.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE :p"),
            {"p": TEST_STORAGE_PREFIX.replace("_", "\\_") + "%"},
        )
    return int(count or 0)


@postgres
async def test_explicit_tenant_url_is_used_and_never_created_or_dropped(
    database_url: str, admin: AsyncEngine
) -> None:
    name = f"{TEST_STORAGE_PREFIX}byo"
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    byo_url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    async with Tenancy(isolation_config(("database", database_url))) as tenancy:
        tenant = await tenancy.create_tenant("byo", database_url=byo_url)
        assert byo_url not in repr(tenant)
        async with tenancy.session("byo") as session:
            session.add(Item(name="in-byo"))
            await session.commit()
        await tenancy.delete_tenant("byo")
        await tenancy.purge_tenant("byo")
    async with admin.connect() as conn:
        assert await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})


@postgres
async def test_tenant_without_url_or_template_is_refused_clearly(database_url: str) -> None:
    config = TenancyConfig(database_url=database_url, isolation_strategy="database")
    async with Tenancy(config) as tenancy:
        with pytest.raises(ConfigurationError, match="TENANCY_DATABASE_URL_TEMPLATE"):
            await tenancy.create_tenant("acme")
        assert await tenancy.get_tenant("acme") is None


def test_template_without_placeholder_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        TenancyConfig(database_url_template="postgresql+asyncpg://db/app")


@postgres
async def test_close_leaves_no_tenant_connection_open(
    database_url: str, admin: AsyncEngine
) -> None:
    async with Tenancy(isolation_config(("database", database_url))) as tenancy:
        for identifier in ("acme", "beta", "gamma"):
            await tenancy.create_tenant(identifier)
            async with tenancy.session(identifier) as session:
                await session.scalars(select(Item))
        assert await tenant_connections(admin) > 0
    assert await tenant_connections(admin) == 0


async def eviction_under_load(
    database_url: str, admin: AsyncEngine, *, tenants: int, cache: int, budget: int
) -> None:
    config = isolation_config(
        ("database", database_url),
        max_cached_engines=cache,
        database_connection_budget=budget,
        tenant_pool_size=2,
    )
    app = apps.create_app(config)
    identifiers = [f"t{n:03d}" for n in range(tenants)]
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await tenant_connections(admin))
            await asyncio.sleep(0.02)

    async with LifespanManager(app):
        tenancy: Tenancy = app.state.tenancy
        for identifier in identifiers:
            await tenancy.create_tenant(identifier)
        sampler = asyncio.create_task(sample())
        rng = random.Random(3)
        gate = asyncio.Semaphore(budget * 2)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:

            async def call(identifier: str) -> None:
                async with gate:
                    response = await c.post(
                        "/items",
                        params={"name": f"{identifier}:x"},
                        headers={"X-Tenant-ID": identifier},
                    )
                assert response.status_code == 200, response.text
                assert all(row["name"].startswith(identifier + ":") for row in response.json())

            await asyncio.gather(*(call(rng.choice(identifiers)) for _ in range(tenants * 4)))
        done.set()
        await sampler
        isolation = tenancy.isolation
        assert isinstance(isolation, DatabaseIsolation)
        assert isolation.engines.evictions > 0
        assert isolation.engines.size <= cache
    assert 0 < peak <= budget
    assert await tenant_connections(admin) == 0


@postgres
async def test_eviction_under_load_stays_within_the_connection_budget(
    database_url: str, admin: AsyncEngine
) -> None:
    await eviction_under_load(database_url, admin, tenants=30, cache=4, budget=8)


@pytest.mark.slow
@postgres
async def test_eviction_under_load_with_200_tenants_and_10_engines(
    database_url: str, admin: AsyncEngine
) -> None:
    await eviction_under_load(database_url, admin, tenants=200, cache=10, budget=20)


@postgres
async def test_unreachable_tenant_server_is_a_clear_503_and_leaves_no_record(
    database_url: str,
) -> None:
    config = isolation_config(
        ("database", database_url),
        database_url_template="postgresql+asyncpg://u:hunter2@127.0.0.1:1/{database}",
    )
    async with Tenancy(config) as tenancy:
        with pytest.raises(ServiceUnavailable) as failure:
            await tenancy.create_tenant("acme")
        assert "hunter2" not in str(failure.value)
        assert await tenancy.get_tenant("acme") is None


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
    indirect=True,
)
async def test_a_request_that_gets_no_connection_of_the_budget_answers_503_retry_after(
    database_url: str,
) -> None:
    # One connection for all tenants: while a's session holds it, b waits in line and gives up.
    config = isolation_config(
        ("database", database_url),
        database_connection_budget=1,
        tenant_pool_size=1,
        database_pool_timeout=0.3,
    )
    app = apps.create_app(config)
    async with LifespanManager(app):
        tenancy: Tenancy = app.state.tenancy
        await tenancy.create_tenant("a")
        await tenancy.create_tenant("b")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async with tenancy.session("a") as held:
                await held.scalars(select(Item))
                refused = await client.get("/items", headers={"X-Tenant-ID": "b"})
            served = await client.get("/items", headers={"X-Tenant-ID": "b"})
        engines = tenancy.isolation.engines  # type: ignore[attr-defined]
        assert engines.budget.peak == 1
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert served.status_code == 200

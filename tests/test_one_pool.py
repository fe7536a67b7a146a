"""One pool: an app hands its own engine to the library, which serves tenants through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import (
    ConfigurationError,
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    get_tenant_session,
)
from tests.support.backends import isolation_config
from tests.support.models import Base, Item

APP_POOL = "h2-app-pool"
POOL_SIZE = 2


def app_engine(url: str) -> AsyncEngine:
    """The app's own engine, its connections named so the server can tell them apart."""
    return sqlalchemy_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=0,
        connect_args={"server_settings": {"application_name": APP_POOL}},
    )


async def server_connections(url: str) -> dict[str, int]:
    """Connections to ``url``'s database by application name, the asking one left out."""
    observer = sqlalchemy_engine(url, poolclass=NullPool)
    try:
        async with observer.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "GROUP BY application_name"
                )
            )
            return {str(name): int(count) for name, count in rows}
    finally:
        await observer.dispose()


def items_app(config: TenancyConfig, **middleware: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=config, **middleware)

    @app.post("/items")
    async def add(name: str, session: AsyncSession = Depends(get_tenant_session)) -> list[str]:
        session.add(Item(name=name))
        await session.commit()
        return list((await session.scalars(select(Item.name).order_by(Item.id))).all())

    return app


async def serve_two_tenants(app: FastAPI) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for tenant in ("acme", "globex", "acme"):
                response = await client.post(
                    "/items", params={"name": f"{tenant}-row"}, headers={"X-Tenant-ID": tenant}
                )
                assert response.status_code == 200, response.text
                answers[tenant] = response.json()
    return answers


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = app_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["row", "schema"])
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_app_engine_serves_every_tenant_from_one_pool(
    database_url: str, engine: AsyncEngine, strategy: str
) -> None:
    config = isolation_config((strategy, database_url))
    async with Tenancy(config, engine=engine) as tenancy:
        for identifier in ("acme", "globex"):
            await tenancy.create_tenant(identifier)

    answers = await serve_two_tenants(items_app(config, engine=engine))

    assert answers == {"acme": ["acme-row", "acme-row"], "globex": ["globex-row"]}
    # The runtime closed without disposing the app's engine: its pool is still open, and no
    # connection of a second pool was ever left behind.
    connections = await server_connections(database_url)
    assert set(connections) == {APP_POOL}
    assert 1 <= connections[APP_POOL] <= POOL_SIZE


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_without_the_app_engine_the_library_opens_a_second_pool(
    database_url: str, engine: AsyncEngine
) -> None:
    # The control for the test above: the same app without engine= holds two pools while it
    # serves, which the connection count sees.
    config = isolation_config(("row", database_url))
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        async with engine.connect() as conn:  # the app's own pool, in use
            await conn.execute(text("SELECT 1"))
        async with tenancy.session("acme") as session:
            await session.execute(select(Item))
            connections = await server_connections(database_url)
    assert APP_POOL in connections
    assert set(connections) - {APP_POOL}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_central_database_is_taken_from_the_engine_when_unset(
    database_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TENANCY_DATABASE_URL")
    # Row isolation: a config for schema isolation names its PostgreSQL or MariaDB server itself.
    config = TenancyConfig(isolation_strategy="row", tenant_metadata=Base.metadata)
    async with Tenancy(config, engine=async_sessionmaker(engine)) as tenancy:
        assert tenancy.engine is engine
        assert tenancy.config.database_backend == "postgresql"
        await tenancy.create_tenant("acme")
        async with tenancy.session("acme") as session:
            session.add(Item(name="one"))
            await session.commit()
    connections = await server_connections(database_url)
    assert set(connections) == {APP_POOL}


async def test_an_engine_for_another_database_than_database_url_is_refused(
    tmp_path: Any,
) -> None:
    engine = sqlalchemy_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(ConfigurationError, match="another database than database_url"):
        Tenancy(config, engine=engine)
    await engine.dispose()


async def test_a_sessionmaker_without_an_engine_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no AsyncEngine bind"):
        Tenancy(TenancyConfig(), engine=async_sessionmaker())


async def test_the_middleware_takes_engine_or_tenancy_not_both(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    engine = sqlalchemy_engine(url)
    tenancy = Tenancy(TenancyConfig(database_url=url), engine=engine)
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=tenancy, engine=engine)
    with pytest.raises(ConfigurationError, match="pass engine= to the Tenancy"):
        async with LifespanManager(app):
            pass
    await engine.dispose()

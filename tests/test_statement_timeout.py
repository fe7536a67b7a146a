"""``statement_timeout``: a statement that runs too long is stopped and the request answers 503.

PostgreSQL enforces it in asyncpg (``command_timeout``: the driver cancels the statement on the
server), MariaDB on the server (``max_statement_time``, set once per connection). Either way the
connection stays usable and the next request is served.
"""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fastapi_tenancy import TenancyConfig, TenancyMiddleware, get_tenant_session
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.unavailable import is_statement_timeout, is_unavailable
from tests.support.backends import isolation_config

CASES = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="row-mysql"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="database-mysql"),
]


def sleeping_app(config: TenancyConfig) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=config)
    sleep = "SELECT pg_sleep(:s)" if config.database_backend == "postgresql" else "SELECT SLEEP(:s)"

    @app.get("/sleep")
    async def slow(seconds: float, session: AsyncSession = Depends(get_tenant_session)) -> float:
        await session.execute(text(sleep), {"s": seconds})
        return seconds

    return app


@pytest.mark.parametrize("isolation_case", CASES, indirect=True)
async def test_a_statement_over_the_timeout_answers_503_and_the_next_request_is_served(
    isolation_case: tuple[str, str],
) -> None:
    config = isolation_config(isolation_case, statement_timeout=0.5)
    app = sleeping_app(config)
    async with LifespanManager(app):
        await app.state.tenancy.create_tenant("slow")
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"X-Tenant-ID": "slow"}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            over = await client.get("/sleep", params={"seconds": 5}, headers=headers)
            under = await client.get("/sleep", params={"seconds": 0.01}, headers=headers)
    assert over.status_code == 503
    assert over.json() == {"detail": "Service unavailable"}
    assert under.status_code == 200


def test_sqlite_has_no_statement_timeout() -> None:
    with pytest.raises(ConfigurationError, match="statement_timeout"):
        TenancyConfig(database_url="sqlite+aiosqlite:///:memory:", statement_timeout=1)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
async def test_a_server_side_statement_timeout_is_recognised(database_url: str) -> None:
    # A role or database may set PostgreSQL's own statement_timeout: 57014, also a 503.
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SET statement_timeout = 100"))
            with pytest.raises(DBAPIError) as raised:
                await conn.execute(text("SELECT pg_sleep(2)"))
    finally:
        await engine.dispose()
    assert is_statement_timeout(raised.value)
    assert not is_unavailable(raised.value)

"""The app of the teardown test, served by a real uvicorn process (``--factory``).

``/lost-after-response`` reads the tenant's rows and answers; a dependency then terminates the
session's server connection after the response was sent and before the session closes, so the
session's teardown meets a dead connection. The config comes from ``TENANCY_*`` variables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import TenancyConfig, TenancyMiddleware, get_tenant_session
from fastapi_tenancy.metrics import metrics_app
from tests.support.models import Item

PID_KEY = "server_connection_id"


async def terminate(url: str, connection_id: int) -> None:
    """End the server session ``connection_id`` and wait until the server has let it go."""
    postgres = url.startswith("postgresql")
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            if postgres:
                await conn.execute(text("SELECT pg_terminate_backend(:id)"), {"id": connection_id})
            else:
                await conn.execute(text(f"KILL {int(connection_id)}"))
            alive = (
                "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
                if postgres
                else "SELECT count(*) FROM information_schema.processlist WHERE id = :id"
            )
            while await conn.scalar(text(alive), {"id": connection_id}):
                await conn.rollback()  # a fresh snapshot of the server's sessions
    finally:
        await engine.dispose()


def create_app() -> FastAPI:
    config = TenancyConfig()
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=config)
    app.mount("/metrics", metrics_app())

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    async def lose_connection_after_response(
        session: AsyncSession = Depends(get_tenant_session),
    ) -> AsyncIterator[None]:
        yield
        # Runs once the response is sent, before get_tenant_session closes the session.
        await terminate(config.database_url, session.info[PID_KEY])

    @app.get("/lost-after-response")
    async def lost_after_response(
        session: AsyncSession = Depends(get_tenant_session),
        _: None = Depends(lose_connection_after_response),
    ) -> list[dict[str, Any]]:
        postgres = config.database_url.startswith("postgresql")
        backend = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
        session.info[PID_KEY] = await session.scalar(text(backend))
        items = (await session.scalars(select(Item).order_by(Item.id))).all()
        return [{"name": item.name, "tenant_id": item.tenant_id} for item in items]

    @app.get("/items")
    async def items(session: AsyncSession = Depends(get_tenant_session)) -> list[str]:
        return [item.name for item in (await session.scalars(select(Item))).all()]

    return app

"""The app the shutdown test runs under uvicorn (``--factory``), configured by ``TENANCY_*``.

``POST /notes`` is a tenant write request that touches no database, so it succeeds while the
central database is stalled and leaves an audit record to write. ``GET /warm`` leaves two idle
connections in the central pool, for the shutdown to close.
"""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI, Request
from sqlalchemy import text

from fastapi_tenancy import TenancyConfig, TenancyMiddleware, Tenant, get_current_tenant
from fastapi_tenancy.health import health_router


def create_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig())
    app.include_router(health_router())

    @app.post("/notes")
    async def note(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"tenant": tenant.identifier}

    @app.get("/health/warm")
    async def warm(request: Request) -> dict[str, int]:
        engine = request.app.state.tenancy.engine
        async with engine.connect() as first, engine.connect() as second:
            await asyncio.gather(first.execute(text("SELECT 1")), second.execute(text("SELECT 1")))
        return {"connections": 2}

    return app

"""Liveness and readiness endpoints, mounted with one line and served without a tenant.

    app.include_router(health_router())     # GET /health/live, GET /health/ready

Both live under ``/health``, which ``excluded_paths`` leaves out of tenant resolution by default.
Readiness answers ``503`` with the failing check's name only, never its error text.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from fastapi_tenancy.dependencies import get_tenancy
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["health_router"]

READINESS_TIMEOUT_SECONDS = 5.0


def health_router(prefix: str = "/health") -> APIRouter:
    """``{prefix}/live``: the process answers; ``{prefix}/ready``: it can reach its database."""
    router = APIRouter(prefix=prefix, tags=["health"])

    @router.get("/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(tenancy: Tenancy = Depends(get_tenancy)) -> JSONResponse:
        checks = {"database": await _database_ready(tenancy)}
        healthy = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", "checks": checks},
            status_code=200 if healthy else 503,
        )

    return router


async def _database_ready(tenancy: Tenancy) -> str:
    timeout = min(READINESS_TIMEOUT_SECONDS, tenancy.config.database_pool_timeout)
    try:
        async with asyncio.timeout(timeout):
            await tenancy.start()
            async with tenancy.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:
        return "unavailable"
    return "ok"

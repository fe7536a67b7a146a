"""Liveness and readiness endpoints, mounted with one line and served without a tenant.

    app.include_router(health_router())     # GET /health, /health/live, /health/ready

Both live under ``/health``, which ``excluded_paths`` (``/health/*``) leaves out of tenant
resolution by default.
Readiness (`fastapi_tenancy.readiness`) reports each dependency with its status and latency and
answers ``503`` only when a required one is down; it never shows an error's text.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from fastapi_tenancy.dependencies import get_tenancy
from fastapi_tenancy.readiness import DEFAULT_TIMEOUT_SECONDS
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["health_router"]


def health_router(
    prefix: str = "/health", *, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> APIRouter:
    """``{prefix}`` and ``{prefix}/live``: the process answers; ``{prefix}/ready``: it can serve.

    Each readiness check gives up after ``timeout`` seconds: keep it below the probe's timeout.
    """
    router = APIRouter(prefix=prefix, tags=["health"])

    @router.get("")
    @router.get("/live")
    async def live() -> dict[str, str]:
        # ``{prefix}`` itself answers liveness too: probes often ask for just /health.
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(tenancy: Tenancy = Depends(get_tenancy)) -> JSONResponse:
        report = await tenancy.readiness.check(timeout)
        return JSONResponse(report.as_json(), status_code=200 if report.ready else 503)

    return router

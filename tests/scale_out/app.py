"""The app each worker process of the scale-out test serves (``uvicorn --factory``).

Its config comes from the ``TENANCY_*`` variables the test sets, like a deployed app's.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request

from fastapi_tenancy import Tenancy, TenancyConfig, TenancyMiddleware, Tenant, get_current_tenant
from fastapi_tenancy.health import health_router


def create_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig())
    app.include_router(health_router())

    @app.get("/whoami")
    async def whoami(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"tenant": tenant.identifier}

    @app.post("/admin/tenants/{identifier}/suspend")
    async def suspend(identifier: str, request: Request) -> dict[str, str]:
        tenancy: Tenancy = request.app.state.tenancy
        tenant = await tenancy.suspend_tenant(identifier)
        return {"status": tenant.status.value}

    return app

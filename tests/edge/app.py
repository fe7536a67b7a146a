"""The app behind Traefik in the edge test: who am I, per tenant, configured from TENANCY_*."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from fastapi_tenancy import TenancyConfig, TenancyMiddleware, Tenant, get_current_tenant
from fastapi_tenancy.health import health_router


def create_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig())
    app.include_router(health_router())

    @app.get("/whoami")
    async def whoami(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"tenant": tenant.identifier}

    return app

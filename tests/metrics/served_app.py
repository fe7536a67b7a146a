"""The app the multi-process metrics test serves with gunicorn: config from TENANCY_* variables."""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI

from fastapi_tenancy import TenancyConfig, TenancyMiddleware, Tenant, get_current_tenant
from fastapi_tenancy.metrics import metrics_app

app = FastAPI()
app.add_middleware(TenancyMiddleware, config=TenancyConfig())
app.mount("/metrics", metrics_app())


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/pid")
async def pid(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, int | str]:
    # Which worker answered: the test needs requests served by more than one.
    return {"pid": os.getpid(), "tenant": tenant.identifier}

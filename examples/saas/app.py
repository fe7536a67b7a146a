"""The SaaS example: PostgreSQL schema per tenant, JWT resolution, Redis rate limits, Alembic.

Run it (see README.md for the whole setup)::

    uvicorn --factory examples.saas.app:create_app

Sign-up records a tenant as ``pending`` and returns at once; the worker
(``python -m examples.saas.worker``) creates its schema and migrates its tables. Every other
route needs ``Authorization: Bearer <token>`` whose ``tenant`` claim names an active tenant.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from examples.saas.models import Project
from examples.saas.settings import tenancy_config
from fastapi_tenancy import (
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    TenantAlreadyExists,
    get_tenancy,
    get_tenant_session,
)
from fastapi_tenancy.health import health_router
from fastapi_tenancy.models import IDENTIFIER_PATTERN


class SignUp(BaseModel):
    identifier: str = Field(pattern=f"^{IDENTIFIER_PATTERN.pattern}$", max_length=63)
    name: str = Field(min_length=1, max_length=200)


class SignUpStatus(BaseModel):
    identifier: str
    status: str


class ProjectIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class ProjectOut(BaseModel):
    id: int
    name: str
    done: bool


def create_app(config: TenancyConfig | None = None) -> FastAPI:
    app = FastAPI(title="fastapi-tenancy SaaS example")
    app.add_middleware(TenancyMiddleware, config=config or tenancy_config())
    app.include_router(health_router())

    @app.post("/signup", response_model=SignUpStatus, status_code=202)
    async def sign_up(body: SignUp, tenancy: Tenancy = Depends(get_tenancy)) -> SignUpStatus:
        # provision=False: the request returns at once; the worker creates the schema and tables.
        try:
            tenant = await tenancy.create_tenant(body.identifier, name=body.name, provision=False)
        except TenantAlreadyExists:
            raise HTTPException(status_code=409, detail="identifier taken") from None
        return SignUpStatus(identifier=tenant.identifier, status=tenant.status.value)

    @app.get("/signup/{identifier}", response_model=SignUpStatus)
    async def sign_up_status(
        identifier: str, tenancy: Tenancy = Depends(get_tenancy)
    ) -> SignUpStatus:
        tenant = await tenancy.get_tenant(identifier)
        if tenant is None:
            raise HTTPException(status_code=404, detail="no such sign-up")
        return SignUpStatus(identifier=tenant.identifier, status=tenant.status.value)

    @app.get("/projects", response_model=list[ProjectOut])
    async def list_projects(
        session: AsyncSession = Depends(get_tenant_session),
    ) -> list[Project]:
        return list(await session.scalars(select(Project).order_by(Project.id)))

    @app.post("/projects", response_model=ProjectOut, status_code=201)
    async def add_project(
        body: ProjectIn, session: AsyncSession = Depends(get_tenant_session)
    ) -> Project:
        project = Project(name=body.name)
        session.add(project)
        await session.commit()
        return project

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        tenant = request.state.tenant
        return {"tenant": tenant.identifier, "name": tenant.name}

    return app

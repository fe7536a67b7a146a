"""An example-style FastAPI app for end-to-end tests: real routes, real sessions, no mocks."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request, WebSocket
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy import (
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    current_tenant,
    get_current_tenant,
    get_tenant_session,
)
from tests.support.models import Item

# Filled by the /background route's task, to prove the tenant follows BackgroundTasks.
background_seen: list[str] = []


def create_app(config: TenancyConfig | None = None, *, tenancy: Tenancy | None = None) -> FastAPI:
    """The test app, on a runtime built from ``config`` or on ``tenancy`` itself."""
    app = FastAPI()
    if tenancy is not None:
        app.add_middleware(TenancyMiddleware, tenancy=tenancy)
    else:
        app.add_middleware(TenancyMiddleware, config=config)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items")
    async def list_items(
        session: AsyncSession = Depends(get_tenant_session),
    ) -> list[dict[str, Any]]:
        items = (await session.scalars(select(Item).order_by(Item.id))).all()
        return [{"name": item.name, "tenant_id": item.tenant_id} for item in items]

    @app.post("/items")
    async def add_then_list(
        name: str, session: AsyncSession = Depends(get_tenant_session)
    ) -> list[dict[str, Any]]:
        # Commit mid-handler, yield to other requests, then read and write again.
        session.add(Item(name=name))
        await session.commit()
        await asyncio.sleep(0)
        session.add(Item(name=name + "-again"))
        await session.commit()
        items = (await session.scalars(select(Item))).all()
        return [{"name": item.name, "tenant_id": item.tenant_id} for item in items]

    @app.get("/whoami")
    async def whoami(
        request: Request, tenant: Tenant = Depends(get_current_tenant)
    ) -> dict[str, Any]:
        return {
            "identifier": tenant.identifier,
            "state": request.state.tenant.identifier,
            "root_path": request.scope.get("root_path", ""),
        }

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(lambda: background_seen.append(current_tenant().identifier))
        return {"status": "queued"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, tenant: Tenant = Depends(get_current_tenant)) -> None:
        await websocket.accept()
        await websocket.send_json({"identifier": tenant.identifier})
        await websocket.close()

    return app

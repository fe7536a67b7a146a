"""The quickstart: an existing FastAPI app made multi-tenant with one line.

Run it with ``python examples/quickstart/app.py`` and call it as either tenant::

    curl -H 'X-Tenant-ID: acme' localhost:8000/items
    curl -H 'X-Tenant-ID: globex' -X POST 'localhost:8000/items?name=rocket'

Tenants and items live in ``./tenancy.db`` (SQLite); no server is needed. Every setting can be
changed with ``TENANCY_*`` environment variables, e.g. ``TENANCY_DATABASE_URL``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fastapi_tenancy import (
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    TenantScoped,
    get_current_tenant,
    get_tenant_session,
)


class Base(DeclarativeBase):
    pass


class Item(TenantScoped, Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class ItemOut(BaseModel):
    id: int
    name: str


DEMO_TENANTS = {"acme": ["anvil", "rocket skates"], "globex": ["hammock"]}


async def create_demo_tenants(tenancy: Tenancy) -> None:
    """Create the two demo tenants with a few items, unless they exist already."""
    for identifier, item_names in DEMO_TENANTS.items():
        if await tenancy.get_tenant(identifier) is None:
            await tenancy.create_tenant(identifier, name=identifier.title())
            async with tenancy.session(identifier) as session:
                session.add_all(Item(name=name) for name in item_names)
                await session.commit()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await create_demo_tenants(app.state.tenancy)
    yield


def create_app(config: TenancyConfig | None = None) -> FastAPI:
    app = FastAPI(title="fastapi-tenancy quickstart", lifespan=lifespan)
    app.add_middleware(TenancyMiddleware, config=config or TenancyConfig())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items", response_model=list[ItemOut])
    async def list_items(session: AsyncSession = Depends(get_tenant_session)) -> list[Item]:
        return list((await session.scalars(select(Item).order_by(Item.id))).all())

    @app.post("/items", response_model=ItemOut, status_code=201)
    async def add_item(name: str, session: AsyncSession = Depends(get_tenant_session)) -> Item:
        item = Item(name=name)
        session.add(item)
        await session.commit()
        return item

    @app.get("/whoami")
    async def whoami(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"identifier": tenant.identifier, "name": tenant.name}

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    port = int(os.environ.get("PORT", "8000"))
    print(
        f"fastapi-tenancy quickstart on http://127.0.0.1:{port} (tenants: acme, globex)\n"
        f"  curl -H 'X-Tenant-ID: acme' localhost:{port}/items\n"
        f"  curl -H 'X-Tenant-ID: globex' -X POST 'localhost:{port}/items?name=rocket'\n"
        f"  curl -H 'X-Tenant-ID: nobody' localhost:{port}/items   # 404\n",
        flush=True,
    )
    uvicorn.run(app, host="127.0.0.1", port=port)

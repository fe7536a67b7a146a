"""The app after: the same engine and routes, now serving many tenants from one pool.

Three lines changed from `examples.existing_app.legacy`: the models import, the middleware given
the app's own engine, and ``Depends(get_tenant_session)`` where the routes had ``get_db``.
Run it with ``uvicorn --factory examples.existing_app.app:create_app``; requests name their
tenant in the ``X-Tenant-ID`` header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from examples.existing_app.db import make_engine
from examples.existing_app.models import Customer, Invoice, Plan
from fastapi_tenancy import TenancyConfig, TenancyMiddleware, get_tenant_session


class NewCustomer(BaseModel):
    name: str
    plan: str


def create_app(database_url: str | None = None) -> FastAPI:
    engine = make_engine(database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()  # the library never disposes the app's engine

    app = FastAPI(lifespan=lifespan)
    app.state.engine = engine
    # TENANCY_* settings from the environment; tenants and their rows go through `engine`'s pool.
    app.add_middleware(TenancyMiddleware, config=TenancyConfig(), engine=engine)

    @app.get("/plans")
    async def list_plans(db: AsyncSession = Depends(get_tenant_session)) -> list[str]:
        return list((await db.scalars(select(Plan.name).order_by(Plan.id))).all())

    @app.get("/customers")
    async def list_customers(
        db: AsyncSession = Depends(get_tenant_session),
    ) -> list[dict[str, str]]:
        # A tenant's customers joined to the shared plans.
        rows = await db.execute(select(Customer.name, Plan.name).join(Plan).order_by(Customer.id))
        return [{"name": name, "plan": plan} for name, plan in rows]

    @app.post("/customers", status_code=201)
    async def add_customer(
        body: NewCustomer, db: AsyncSession = Depends(get_tenant_session)
    ) -> dict[str, int]:
        plan = await db.scalar(select(Plan).where(Plan.name == body.plan))
        if plan is None:
            raise HTTPException(422, "unknown plan")
        customer = Customer(name=body.name, plan_id=plan.id)  # tenant_id is stamped on flush
        db.add(customer)
        await db.commit()
        return {"id": customer.id}

    @app.get("/invoices/total")
    async def invoice_total(db: AsyncSession = Depends(get_tenant_session)) -> dict[str, int]:
        rows = (await db.scalars(select(Invoice.cents))).all()
        return {"count": len(rows), "cents": sum(rows)}

    return app

"""The app before: single-tenant, its own engine and ``get_db``, no ``tenant_id`` anywhere.

Run it with ``uvicorn --factory examples.existing_app.legacy:create_app`` after
``alembic -c examples/existing_app/alembic.ini upgrade 0001`` and the seed script.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from examples.existing_app.db import make_engine, sessions


class Base(DeclarativeBase):
    pass


class Plan(Base):
    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20), unique=True)
    monthly_cents: Mapped[int]


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    cents: Mapped[int]


class NewCustomer(BaseModel):
    name: str
    plan: str


def create_app(database_url: str | None = None) -> FastAPI:
    engine = make_engine(database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    async def get_db() -> AsyncIterator[AsyncSession]:
        async for session in sessions(engine):
            yield session

    @app.get("/customers")
    async def list_customers(db: AsyncSession = Depends(get_db)) -> list[dict[str, str]]:
        rows = await db.execute(select(Customer.name, Plan.name).join(Plan).order_by(Customer.id))
        return [{"name": name, "plan": plan} for name, plan in rows]

    @app.post("/customers", status_code=201)
    async def add_customer(body: NewCustomer, db: AsyncSession = Depends(get_db)) -> dict[str, int]:
        plan = await db.scalar(select(Plan).where(Plan.name == body.plan))
        if plan is None:
            raise HTTPException(422, "unknown plan")
        customer = Customer(name=body.name, plan_id=plan.id)
        db.add(customer)
        await db.commit()
        return {"id": customer.id}

    return app

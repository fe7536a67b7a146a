"""The single-tenant app's existing data: two plans, three customers and their invoices.

``DATABASE_URL=... python -m examples.existing_app.seed`` after ``alembic upgrade 0001``.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from examples.existing_app.db import database_url
from examples.existing_app.legacy import Customer, Invoice, Plan

PLANS = {"free": 0, "pro": 2900}  # name -> monthly cents
CUSTOMERS = {"Ada": "pro", "Grace": "free", "Linus": "pro"}  # name -> plan
INVOICES_EACH = 2


async def seed(url: str | None = None) -> None:
    engine = create_async_engine(url or database_url(), poolclass=NullPool)
    try:
        async with AsyncSession(engine) as session, session.begin():
            plans = {name: Plan(name=name, monthly_cents=cents) for name, cents in PLANS.items()}
            session.add_all(plans.values())
            await session.flush()
            customers = [
                Customer(name=name, plan_id=plans[plan].id) for name, plan in CUSTOMERS.items()
            ]
            session.add_all(customers)
            await session.flush()
            session.add_all(
                Invoice(customer_id=customer.id, cents=1000 * (n + 1))
                for customer in customers
                for n in range(INVOICES_EACH)
            )
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(seed())

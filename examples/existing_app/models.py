"""The models after the conversion: customers and invoices are tenant-scoped, plans are shared.

The only change from `examples.existing_app.legacy` is ``TenantScoped`` on the two tenant
tables; ``plans`` has no ``tenant_id`` and is read by every tenant.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fastapi_tenancy import TenantScoped


class Base(DeclarativeBase):
    pass


class Plan(Base):  # shared: one row per plan, for every tenant
    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20), unique=True)
    monthly_cents: Mapped[int]


class Customer(TenantScoped, Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))


class Invoice(TenantScoped, Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    cents: Mapped[int]

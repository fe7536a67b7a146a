"""The SaaS example's tenant tables. Alembic owns them: see ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import Boolean, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fastapi_tenancy import TenantScoped

# TENANCY_TENANT_METADATA: provisioning creates a tenant's schema with no tables in it; the
# migrations create them, so the first revision never finds its tables already there.
ALEMBIC_OWNS_THE_TABLES = MetaData()


class Base(DeclarativeBase):
    pass


class Project(TenantScoped, Base):
    """A tenant's project; lives in the tenant's own PostgreSQL schema."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    done: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")

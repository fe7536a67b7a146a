"""⑤ Isolation: a tenant -> an `AsyncSession` that reaches only that tenant's data."""

from __future__ import annotations

from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.row import RowIsolation, TenantSession
from fastapi_tenancy.isolation.scoped import TenantScoped
from fastapi_tenancy.isolation.tables import TenantTables

__all__ = ["IsolationStrategy", "RowIsolation", "TenantScoped", "TenantSession", "TenantTables"]

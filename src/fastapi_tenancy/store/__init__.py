"""Tenant stores: the source of truth for tenant records.

`TenantStore` is the interface; `SQLAlchemyTenantStore` keeps records in a SQL database and
`MemoryTenantStore` in process memory.
"""

from __future__ import annotations

from fastapi_tenancy.store.base import TenantStore
from fastapi_tenancy.store.memory import MemoryTenantStore
from fastapi_tenancy.store.sqlalchemy import SQLAlchemyTenantStore, tenants_table

__all__ = ["MemoryTenantStore", "SQLAlchemyTenantStore", "TenantStore", "tenants_table"]

"""⑤ Isolation: a tenant -> an `AsyncSession` that reaches only that tenant's data."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.database import CrossDatabaseStatement, DatabaseIsolation
from fastapi_tenancy.isolation.row import RowIsolation
from fastapi_tenancy.isolation.schema import SchemaIsolation
from fastapi_tenancy.isolation.scoped import TenantScoped
from fastapi_tenancy.isolation.session import TenantSession
from fastapi_tenancy.isolation.tables import TenantTables, shared_tables, tenant_tables

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from fastapi_tenancy.config import TenancyConfig

__all__ = [
    "CrossDatabaseStatement",
    "DatabaseIsolation",
    "IsolationStrategy",
    "RowIsolation",
    "SchemaIsolation",
    "TenantScoped",
    "TenantSession",
    "TenantTables",
    "build_isolation",
    "shared_tables",
    "tenant_tables",
]


def build_isolation(config: TenancyConfig, engine: AsyncEngine) -> IsolationStrategy:
    """Deprecated: `fastapi_tenancy._wiring.isolation` builds the strategy a config names."""
    warnings.warn(
        "build_isolation is deprecated; Tenancy builds its isolation from the config, and each "
        "strategy takes plain arguments",
        DeprecationWarning,
        stacklevel=2,
    )
    from fastapi_tenancy import _wiring

    return _wiring.isolation(config, engine)

"""⑤ Isolation: a tenant -> an `AsyncSession` that reaches only that tenant's data."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.config import TenancyConfig

# autocommit and references are imported for their session listeners.
from fastapi_tenancy.isolation import autocommit as autocommit
from fastapi_tenancy.isolation import references as references
from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.isolation.row import RowIsolation, TenantSession
from fastapi_tenancy.isolation.schema import SchemaIsolation
from fastapi_tenancy.isolation.scoped import TenantScoped
from fastapi_tenancy.isolation.tables import TenantTables

__all__ = [
    "DatabaseIsolation",
    "IsolationStrategy",
    "RowIsolation",
    "SchemaIsolation",
    "TenantScoped",
    "TenantSession",
    "TenantTables",
    "build_isolation",
]


def build_isolation(config: TenancyConfig, engine: AsyncEngine) -> IsolationStrategy:
    """The strategy ``config.isolation_strategy`` names, on the central ``engine``."""
    match config.isolation_strategy:
        case "row":
            return RowIsolation(
                engine,
                TenantTables(config.tenant_metadata),
                row_level_security=config.row_level_security,
            )
        case "schema":
            binding = config.schema_binding
            if binding == "auto":
                binding = "search_path" if engine.dialect.name == "postgresql" else "translate_map"
            return SchemaIsolation(
                engine,
                TenantTables(config.tenant_metadata),
                prefix=config.schema_prefix,
                binding=binding,
            )
        case "database":
            return DatabaseIsolation(config, TenantTables(config.tenant_metadata))

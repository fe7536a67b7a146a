"""Multi-tenancy for existing FastAPI apps, in one line.

    app.add_middleware(TenancyMiddleware, config=TenancyConfig())

A request passes six stages: ① resolution (scope -> identifier), ② lookup (identifier -> Tenant,
cached), ③ rate limiting, ④ context (the current tenant), ⑤ isolation (a session bound to the
tenant's data) and ⑥ events.
"""

from __future__ import annotations

from fastapi_tenancy.cache.base import TenantCache
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.context import current_tenant, current_tenant_or_none, tenant_context
from fastapi_tenancy.dependencies import get_current_tenant, get_tenancy, get_tenant_session
from fastapi_tenancy.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    CrossTenantAccess,
    InvalidTenantIdentifier,
    InvalidTransition,
    ServiceUnavailable,
    TenancyError,
    TenantAlreadyExists,
    TenantContextMissing,
    TenantNotFound,
    TenantSuspended,
)
from fastapi_tenancy.isolation.scoped import TenantScoped, tenant_id_type
from fastapi_tenancy.middleware import TenancyMiddleware
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.observe.logs import TenantLogFilter
from fastapi_tenancy.tenancy import Tenancy

__version__ = "0.1.0.dev0"

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "CrossTenantAccess",
    "InvalidTenantIdentifier",
    "InvalidTransition",
    "ServiceUnavailable",
    "Tenancy",
    "TenancyConfig",
    "TenancyError",
    "TenancyMiddleware",
    "Tenant",
    "TenantAlreadyExists",
    "TenantCache",
    "TenantContextMissing",
    "TenantLogFilter",
    "TenantNotFound",
    "TenantScoped",
    "TenantStatus",
    "TenantSuspended",
    "current_tenant",
    "current_tenant_or_none",
    "get_current_tenant",
    "get_tenancy",
    "get_tenant_session",
    "tenant_context",
    "tenant_id_type",
]

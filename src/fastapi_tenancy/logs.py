"""Moved to `fastapi_tenancy.observe.logs`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.logs import NO_TENANT_LOG_VALUE, TenantLogFilter

__all__ = ["NO_TENANT_LOG_VALUE", "TenantLogFilter"]

"""Moved to `fastapi_tenancy.observe.labels`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.labels import NO_TENANT, OTHER_TENANTS, TenantLabels

__all__ = ["NO_TENANT", "OTHER_TENANTS", "TenantLabels"]

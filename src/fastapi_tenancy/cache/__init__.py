"""Tenant caches: resolved tenants (and known absences) kept between requests.

`TenantCache` is the interface; `MemoryTenantCache` is the in-process implementation.
"""

from __future__ import annotations

from fastapi_tenancy.cache.base import CachedLookup, CacheObserver, SharedTenantCache, TenantCache
from fastapi_tenancy.cache.memory import MemoryTenantCache

__all__ = ["CacheObserver", "CachedLookup", "MemoryTenantCache", "SharedTenantCache", "TenantCache"]

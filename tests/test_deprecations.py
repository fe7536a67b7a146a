"""Old import paths and names still work for one release, and every use warns."""

from __future__ import annotations

import importlib

import pytest

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.cache.memory import MemoryTenantCache
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.store.memory import MemoryTenantStore

MOVED = {
    "fastapi_tenancy.audit": ("fastapi_tenancy.observe.audit", "AuditTrail"),
    "fastapi_tenancy.audit.spill": ("fastapi_tenancy.observe.audit.spill", "decode_line"),
    "fastapi_tenancy.events": ("fastapi_tenancy.observe.events", "Hooks"),
    "fastapi_tenancy.inflight": ("fastapi_tenancy.isolation.inflight", "InFlight"),
    "fastapi_tenancy.jwks": ("fastapi_tenancy.resolution.jwks", "JWKSKeys"),
    "fastapi_tenancy.logs": ("fastapi_tenancy.observe.logs", "TenantLogFilter"),
    "fastapi_tenancy.metrics.app": ("fastapi_tenancy.observe.metrics_app", "metrics_app"),
    "fastapi_tenancy.metrics.core": ("fastapi_tenancy.observe.metrics", "TenancyMetrics"),
    "fastapi_tenancy.metrics.labels": ("fastapi_tenancy.observe.labels", "TenantLabels"),
    "fastapi_tenancy.slowquery": ("fastapi_tenancy.observe.slowquery", "SlowQueryLog"),
    "fastapi_tenancy.unavailable": ("fastapi_tenancy.isolation.unavailable", "is_unavailable"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_name_read_through_a_moved_module_warns_and_is_the_same_object(old: str) -> None:
    new, name = MOVED[old]
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'not_there'"):
        module.not_there  # noqa: B018


async def test_renamed_lookup_methods_warn_and_answer_like_the_new_ones() -> None:
    store = MemoryTenantStore()
    await store.add(Tenant(identifier="acme"))
    lookup = TenantLookup(store, MemoryTenantCache(), ttl=60, negative_ttl=5)
    expected = await lookup.get_active("acme")
    with pytest.warns(DeprecationWarning, match=r"TenantLookup.resolve is renamed"):
        assert await lookup.resolve("acme") == expected
    with pytest.warns(DeprecationWarning, match=r"TenantLookup.resolve_request is renamed"):
        assert await lookup.resolve_request(Resolution("acme")) == expected


async def test_tenancy_resolve_warns_and_resolves_like_the_admission() -> None:
    scope = {"type": "http", "path": "/", "headers": [(b"x-tenant-id", b"acme")]}
    async with Tenancy(TenancyConfig()) as tenancy:
        with pytest.warns(DeprecationWarning, match="Tenancy.resolve is deprecated"):
            resolved = await tenancy.resolve(scope)
        assert resolved == await tenancy.admission.resolve(scope)
    assert resolved is not None
    assert resolved.identifier == "acme"

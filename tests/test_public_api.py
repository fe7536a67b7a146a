"""The public surface: `__all__` is sorted, complete and importable."""

from __future__ import annotations

import fastapi_tenancy


def test_all_is_sorted_and_importable() -> None:
    assert fastapi_tenancy.__all__ == sorted(fastapi_tenancy.__all__)
    for name in fastapi_tenancy.__all__:
        assert getattr(fastapi_tenancy, name) is not None


def test_contract_names_from_the_design_are_exported() -> None:
    required = {
        "TenancyConfig",
        "TenancyMiddleware",
        "Tenancy",
        "Tenant",
        "TenantStatus",
        "get_tenant_session",
        "get_current_tenant",
        "TenantScoped",
        "TenantCache",
    }
    assert required <= set(fastapi_tenancy.__all__)


def test_every_public_name_is_documented() -> None:
    for name in fastapi_tenancy.__all__:
        assert getattr(fastapi_tenancy, name).__doc__, name

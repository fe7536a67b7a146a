"""④ Context: set and reset by token, nesting, and no leaks between concurrent tasks."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_tenancy import (
    Tenant,
    TenantContextMissing,
    current_tenant,
    current_tenant_or_none,
    tenant_context,
)

A = Tenant(identifier="a")
B = Tenant(identifier="b")


def test_no_tenant_outside_any_scope() -> None:
    assert current_tenant_or_none() is None
    with pytest.raises(TenantContextMissing):
        current_tenant()


def test_nested_scopes_restore_the_outer_tenant() -> None:
    with tenant_context(A):
        with tenant_context(B):
            assert current_tenant() is B
        assert current_tenant() is A
    assert current_tenant_or_none() is None


def test_scope_resets_even_when_the_body_raises() -> None:
    with pytest.raises(ValueError, match="boom"), tenant_context(A):
        raise ValueError("boom")
    assert current_tenant_or_none() is None


async def test_concurrent_tasks_never_see_each_others_tenant() -> None:
    seen: list[tuple[str, str]] = []

    async def work(tenant: Tenant) -> None:
        with tenant_context(tenant):
            for _ in range(20):
                await asyncio.sleep(0)
                seen.append((tenant.identifier, current_tenant().identifier))

    await asyncio.gather(*(work(t) for t in [A, B] * 10))
    assert all(expected == actual for expected, actual in seen)

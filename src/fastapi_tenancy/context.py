"""④ The current tenant, carried in a ContextVar.

The middleware sets it for the duration of a request; :func:`tenant_context` sets it anywhere else
(scripts, background jobs, tests). Both reset it with their token, so nesting restores the outer
tenant and concurrent tasks never see each other's tenant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from fastapi_tenancy.exceptions import TenantContextMissing
from fastapi_tenancy.models import Tenant

__all__ = ["current_tenant", "current_tenant_or_none", "tenant_context"]

_current: ContextVar[Tenant | None] = ContextVar("fastapi_tenancy_current_tenant", default=None)


def current_tenant() -> Tenant:
    """The tenant bound to the running request or scope; raises if there is none."""
    tenant = _current.get()
    if tenant is None:
        raise TenantContextMissing(
            "no tenant is bound: this code runs outside a tenant request or tenant_scope()"
        )
    return tenant


def current_tenant_or_none() -> Tenant | None:
    """The bound tenant, or ``None`` outside any tenant request or scope."""
    return _current.get()


@contextmanager
def tenant_context(tenant: Tenant) -> Iterator[Tenant]:
    """Bind ``tenant`` for the body of the ``with`` block, then restore what was bound before."""
    token = _current.set(tenant)
    try:
        yield tenant
    finally:
        _current.reset(token)

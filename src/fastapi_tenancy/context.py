"""④ The current tenant, carried in a ContextVar.

The middleware sets it for the duration of a request; :func:`tenant_context` sets it anywhere else
(scripts, background jobs, tests). Both reset it with their token, so nesting restores the outer
tenant and concurrent tasks never see each other's tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from fastapi_tenancy.exceptions import TenantContextMissing
from fastapi_tenancy.models import Tenant

__all__ = [
    "bind_tenant",
    "current_tenant",
    "current_tenant_or_none",
    "reset_tenant",
    "tenant_context",
]

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


# For code that cannot use a ``with`` block (the middleware binds around the app's call):
# ``token = bind_tenant(tenant)`` binds ``tenant`` as current, ``reset_tenant(token)`` restores
# what was bound before. They are the ContextVar's own methods: the middleware calls them on
# every request, and a wrapping function would add a Python call to each.
bind_tenant: Callable[[Tenant | None], Token[Tenant | None]] = _current.set
reset_tenant: Callable[[Token[Tenant | None]], None] = _current.reset


@contextmanager
def tenant_context(tenant: Tenant) -> Iterator[Tenant]:
    """Bind an already found ``tenant`` for the ``with`` block, then restore the outer one.

    It takes a `Tenant` and does no I/O. `Tenancy.tenant_scope` is its runtime counterpart: it
    takes an identifier, looks the tenant up (refusing one that may not serve) and binds it.
    """
    token = _current.set(tenant)
    try:
        yield tenant
    finally:
        _current.reset(token)

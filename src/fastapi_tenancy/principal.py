"""The principal hook: the app confirms that the authenticated caller belongs to the tenant.

Resolution says which tenant a request names; only the app knows whether the caller may use it
(a user's memberships, an API key's owner). The hook runs after the lookup and before the app::

    async def is_member(tenant: Tenant, resolution: Resolution, scope: Scope) -> bool:
        subject = (resolution.claims or {}).get("sub")
        return await memberships.contains(subject, tenant.id)

    app.add_middleware(TenancyMiddleware, config=TenancyConfig(), principal_check=is_member)
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from fastapi_tenancy.exceptions import PrincipalNotAllowed
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.types import Scope

__all__ = ["PrincipalCheck", "check_principal"]

PrincipalCheck = Callable[[Tenant, Resolution, Scope], Awaitable[bool] | bool]
"""``(tenant, resolution, scope) -> bool``, sync or async; ``True`` lets the request through."""


async def check_principal(
    check: PrincipalCheck, tenant: Tenant, resolution: Resolution, scope: Scope
) -> None:
    """Run ``check``; raise `PrincipalNotAllowed` unless it answers exactly ``True``.

    Anything but ``True`` refuses, so a hook that forgets to return never lets a request through.
    A `TenancyError` the hook raises (``AuthenticationFailed`` when there is no principal at
    all) answers with its own status.
    """
    allowed = check(tenant, resolution, scope)
    if inspect.isawaitable(allowed):
        allowed = await allowed
    if allowed is not True:
        raise PrincipalNotAllowed(f"the principal check refused tenant {tenant.identifier!r}")

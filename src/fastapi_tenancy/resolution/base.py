"""The resolver contract shared by every resolution strategy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi_tenancy.types import Scope

__all__ = ["Resolution", "TenantResolver"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a resolver found in a request.

    ``identifier`` is already validated (`fastapi_tenancy.models.validate_identifier`).
    ``mount`` is a path prefix the app must not see (path strategy: ``"/t/acme"``); the middleware
    appends it to ``root_path`` the way Starlette's ``Mount`` does. ``claims`` holds the verified
    token claims when a JWT named the tenant.

    ``host`` is a request host that may be a tenant's custom domain (`fastapi_tenancy.domains`):
    the lookup maps it to a tenant, since resolution does no I/O. ``identifier`` is then empty,
    or names the tenant another strategy found, which the host must belong to.
    """

    identifier: str
    mount: str = ""
    claims: Mapping[str, Any] | None = field(default=None, compare=False)
    host: str | None = None


class TenantResolver(Protocol):
    """Finds the tenant a request is for, from the ASGI scope alone.

    Returns ``None`` when the request does not name a tenant the way this resolver looks for it.
    Raises `InvalidTenantIdentifier` for a malformed identifier and `AuthenticationFailed` for a
    token that cannot be trusted. Never does I/O.
    """

    def resolve(self, scope: Scope) -> Resolution | None: ...

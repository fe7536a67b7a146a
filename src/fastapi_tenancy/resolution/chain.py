"""Several strategies at once: the tenant is whatever they name, and they must agree."""

from __future__ import annotations

from fastapi_tenancy.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    InvalidTenantIdentifier,
)
from fastapi_tenancy.resolution.base import Resolution, TenantResolver
from fastapi_tenancy.types import Scope

__all__ = ["ChainResolver"]


class ChainResolver:
    """Asks every resolver; those that find a tenant must all name the same one.

    ``ChainResolver(HeaderResolver("X-Tenant-ID"), JWTResolver(...))`` accepts a request that
    names its tenant by header, by token, or by both when they agree. A header naming ``acme``
    beside a valid token for ``globex`` is refused (``401`` when a token is involved, else
    ``404``), so one strategy can never override another. An error from any resolver ends the
    request: a malformed or forged identifier is never skipped in favour of another strategy.
    """

    def __init__(self, *resolvers: TenantResolver) -> None:
        if not resolvers:
            raise ConfigurationError("ChainResolver needs at least one resolver")
        self.resolvers = resolvers

    def resolve(self, scope: Scope) -> Resolution | None:
        found = [r for r in (resolver.resolve(scope) for resolver in self.resolvers) if r]
        if not found:
            return None
        # A custom domain (``host``, empty identifier) is mapped by the lookup, which also checks
        # that it belongs to the tenant the other strategies name.
        named = [resolution for resolution in found if resolution.identifier]
        identifier = named[0].identifier if named else ""
        if any(resolution.identifier != identifier for resolution in named):
            if any(resolution.claims is not None for resolution in found):
                raise AuthenticationFailed("the token names another tenant than the request")
            raise InvalidTenantIdentifier("the request names two different tenants")
        mount = next((r.mount for r in found if r.mount), "")
        claims = next((r.claims for r in found if r.claims is not None), None)
        host = next((r.host for r in found if r.host is not None), None)
        return Resolution(identifier, mount=mount, claims=claims, host=host)

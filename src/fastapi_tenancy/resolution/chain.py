"""Several strategies tried in order."""

from __future__ import annotations

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.resolution.base import Resolution, TenantResolver
from fastapi_tenancy.types import Scope

__all__ = ["ChainResolver"]


class ChainResolver:
    """Returns the first resolver's answer that is not ``None``.

    ``ChainResolver(HeaderResolver("X-Tenant-ID"), PathResolver("/t"))`` prefers the header.
    An error from any resolver ends the chain: a malformed or forged identifier is never skipped
    in favour of a later strategy.
    """

    def __init__(self, *resolvers: TenantResolver) -> None:
        if not resolvers:
            raise ConfigurationError("ChainResolver needs at least one resolver")
        self.resolvers = resolvers

    def resolve(self, scope: Scope) -> Resolution | None:
        for resolver in self.resolvers:
            resolution = resolver.resolve(scope)
            if resolution is not None:
                return resolution
        return None

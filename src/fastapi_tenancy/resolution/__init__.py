"""① Resolution: ASGI scope -> tenant identifier. Pure, synchronous, no I/O.

Each strategy is a `TenantResolver`: `HeaderResolver`, `SubdomainResolver`, `JWTResolver` and
`PathResolver`; `ChainResolver` tries several in order. Each takes plain arguments::

    resolver = ChainResolver(HeaderResolver("X-Tenant-ID"), PathResolver("/t"))
    resolver.resolve(scope)  # a Resolution naming the tenant, or None

`Tenancy` builds the one a `TenancyConfig` asks for (`fastapi_tenancy._wiring`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from fastapi_tenancy.resolution.base import Resolution, TenantResolver
from fastapi_tenancy.resolution.chain import ChainResolver
from fastapi_tenancy.resolution.header import HeaderResolver
from fastapi_tenancy.resolution.jwt import JWTResolver, SigningKeys, UnknownSigningKey
from fastapi_tenancy.resolution.path import PathResolver
from fastapi_tenancy.resolution.subdomain import SubdomainResolver

if TYPE_CHECKING:
    from fastapi_tenancy.config import TenancyConfig

__all__ = [
    "ChainResolver",
    "HeaderResolver",
    "JWTResolver",
    "PathResolver",
    "Resolution",
    "SigningKeys",
    "SubdomainResolver",
    "TenantResolver",
    "UnknownSigningKey",
    "build_resolver",
]


def build_resolver(
    config: TenancyConfig, signing_keys: SigningKeys | None = None
) -> TenantResolver:
    """Deprecated: `fastapi_tenancy._wiring.resolver` builds the resolver a config asks for."""
    warnings.warn(
        "build_resolver is deprecated; Tenancy builds its resolver from the config, and each "
        "resolver takes plain arguments",
        DeprecationWarning,
        stacklevel=2,
    )
    from fastapi_tenancy import _wiring

    return _wiring.resolver(config, signing_keys)

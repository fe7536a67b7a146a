"""① Resolution: ASGI scope -> tenant identifier. Pure, synchronous, no I/O.

Each strategy is a `TenantResolver`: `HeaderResolver`, `SubdomainResolver`, `JWTResolver` and
`PathResolver`; `ChainResolver` tries several in order. `build_resolver` builds the one a
`TenancyConfig` asks for::

    resolver = build_resolver(TenancyConfig(resolution_strategy="header,path"))
    resolver.resolve(scope)  # Resolution("acme", mount="/acme") or None
"""

from __future__ import annotations

from fastapi_tenancy.config import ResolutionStrategy, TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.resolution.base import Resolution, TenantResolver
from fastapi_tenancy.resolution.chain import ChainResolver
from fastapi_tenancy.resolution.header import HeaderResolver
from fastapi_tenancy.resolution.jwt import JWTResolver, SigningKeys, UnknownSigningKey
from fastapi_tenancy.resolution.path import PathResolver
from fastapi_tenancy.resolution.subdomain import SubdomainResolver

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
    """The resolver for ``config.resolution_strategy``: one strategy, or a chain in that order.

    ``signing_keys`` is the key set the ``jwt`` strategy selects from when ``jwt_jwks_url`` is
    set (`fastapi_tenancy.resolution.jwks.JWKSKeys`, which `Tenancy` fetches and refreshes).
    """
    resolvers = [
        _build_one(config, strategy, signing_keys) for strategy in config.resolution_strategy
    ]
    if len(resolvers) == 1:
        return resolvers[0]
    return ChainResolver(*resolvers)


def _build_one(
    config: TenancyConfig, strategy: ResolutionStrategy, signing_keys: SigningKeys | None
) -> TenantResolver:
    match strategy:
        case "header":
            return HeaderResolver(config.tenant_header_name)
        case "subdomain":
            if config.domain_suffix is None:
                raise ConfigurationError("resolution strategy 'subdomain' needs domain_suffix")
            return SubdomainResolver(
                config.domain_suffix, config.trusted_proxies, custom_domains=config.custom_domains
            )
        case "jwt":
            key: str | SigningKeys
            if config.jwt_jwks_url is not None:
                if signing_keys is None:
                    raise ConfigurationError(
                        "jwt_jwks_url is set: pass the fetched key set as signing_keys"
                    )
                key = signing_keys
            elif config.jwt_secret is not None:
                key = config.jwt_secret.get_secret_value()
            else:
                raise ConfigurationError("resolution strategy 'jwt' needs jwt_secret")
            return JWTResolver(
                key,
                config.jwt_algorithm,
                config.jwt_tenant_claim,
                audience=config.jwt_audience,
                issuer=config.jwt_issuer,
                leeway=config.jwt_leeway,
            )
        case "path":
            return PathResolver(config.tenant_path_prefix)

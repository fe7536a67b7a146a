from __future__ import annotations

import secrets
import time

import jwt as pyjwt
import pytest

from fastapi_tenancy import _wiring, resolution
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.resolution import (
    ChainResolver,
    HeaderResolver,
    JWTResolver,
    PathResolver,
    Resolution,
    SubdomainResolver,
)
from tests.support.scopes import http_scope

SECRET = secrets.token_urlsafe(48)


def test_default_config_resolves_the_tenant_header() -> None:
    resolver = _wiring.resolver(TenancyConfig())
    assert isinstance(resolver, HeaderResolver)
    assert resolver.resolve(http_scope(headers=[("X-Tenant-ID", "acme")])) == Resolution("acme")


def test_header_name_comes_from_the_config() -> None:
    resolver = _wiring.resolver(TenancyConfig(tenant_header_name="X-Org"))
    assert resolver.resolve(http_scope(headers=[("X-Org", "acme")])) == Resolution("acme")
    assert resolver.resolve(http_scope(headers=[("X-Tenant-ID", "acme")])) is None


def test_subdomain_config_trusts_only_its_proxies() -> None:
    config = TenancyConfig(
        resolution_strategy="subdomain", domain_suffix="example.com", trusted_proxies="10.0.0.0/8"
    )
    resolver = _wiring.resolver(config)
    assert isinstance(resolver, SubdomainResolver)
    headers = [("host", "internal.example.com"), ("x-forwarded-host", "acme.example.com")]
    assert resolver.resolve(http_scope(headers=headers, client=("10.0.0.2", 1))) == Resolution(
        "acme"
    )
    assert resolver.resolve(http_scope(headers=headers, client=("192.0.2.1", 1))) == Resolution(
        "internal"
    )


def test_path_prefix_comes_from_the_config() -> None:
    resolver = _wiring.resolver(TenancyConfig(resolution_strategy="path", tenant_path_prefix="/t"))
    assert isinstance(resolver, PathResolver)
    assert resolver.resolve(http_scope("/t/acme/orders")) == Resolution("acme", mount="/t/acme")


def test_jwt_config_verifies_claim_audience_and_issuer() -> None:
    config = TenancyConfig(
        resolution_strategy="jwt",
        jwt_secret=SECRET,
        jwt_tenant_claim="org",
        jwt_audience="api",
        jwt_issuer="https://idp",
    )
    resolver = _wiring.resolver(config)
    assert isinstance(resolver, JWTResolver)
    claims = {"org": "acme", "aud": "api", "iss": "https://idp", "exp": int(time.time()) + 60}
    token = pyjwt.encode(claims, SECRET, algorithm="HS256")
    scope = http_scope(headers=[("authorization", f"Bearer {token}")])
    assert resolver.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize("strategies", ["header,path", "path,header", "jwt,subdomain,header,path"])
def test_several_strategies_are_chained_in_order(strategies: str) -> None:
    config = TenancyConfig(
        resolution_strategy=strategies, domain_suffix="example.com", jwt_secret=SECRET
    )
    resolver = _wiring.resolver(config)
    assert isinstance(resolver, ChainResolver)
    kinds = {
        HeaderResolver: "header",
        SubdomainResolver: "subdomain",
        JWTResolver: "jwt",
        PathResolver: "path",
    }
    assert ",".join(kinds[type(r)] for r in resolver.resolvers) == strategies


def test_chained_strategies_must_agree() -> None:
    resolver = _wiring.resolver(TenancyConfig(resolution_strategy="path,header"))
    agreeing = http_scope("/globex/orders", headers=[("X-Tenant-ID", "globex")])
    assert resolver.resolve(agreeing) == Resolution("globex", mount="/globex")
    with pytest.raises(InvalidTenantIdentifier):
        resolver.resolve(http_scope("/globex/orders", headers=[("X-Tenant-ID", "acme")]))


def test_jwt_leeway_comes_from_the_config() -> None:
    config = TenancyConfig(resolution_strategy="jwt", jwt_secret=SECRET, jwt_leeway=0)
    resolver = _wiring.resolver(config)
    assert isinstance(resolver, JWTResolver)
    assert resolver.leeway == 0
    assert TenancyConfig().jwt_leeway == 10


def test_jwks_config_needs_the_fetched_key_set() -> None:
    config = TenancyConfig(
        resolution_strategy="jwt", jwt_algorithm="RS256", jwt_jwks_url="https://idp/jwks"
    )
    with pytest.raises(ConfigurationError, match="signing_keys"):
        _wiring.resolver(config)


def test_the_old_build_resolver_still_builds_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="build_resolver is deprecated"):
        resolver = resolution.build_resolver(TenancyConfig(tenant_header_name="X-Org"))
    assert isinstance(resolver, HeaderResolver)
    assert resolver.resolve(http_scope(headers=[("X-Org", "acme")])) == Resolution("acme")

from __future__ import annotations

import secrets
import time

import jwt as pyjwt
import pytest

from fastapi_tenancy.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    InvalidTenantIdentifier,
)
from fastapi_tenancy.resolution import (
    ChainResolver,
    HeaderResolver,
    JWTResolver,
    PathResolver,
    Resolution,
)
from tests.support.scopes import http_scope

CHAIN = ChainResolver(HeaderResolver("X-Tenant-ID"), PathResolver("/t"))


def test_agreeing_resolvers_name_the_tenant_and_keep_the_mount() -> None:
    scope = http_scope("/t/acme/orders", headers=[("X-Tenant-ID", "acme")])
    assert CHAIN.resolve(scope) == Resolution("acme", mount="/t/acme")


def test_one_resolver_finding_a_tenant_is_enough() -> None:
    assert CHAIN.resolve(http_scope("/t/globex/orders")) == Resolution("globex", mount="/t/globex")
    assert CHAIN.resolve(http_scope("/orders", headers=[("X-Tenant-ID", "acme")])) == Resolution(
        "acme"
    )


def test_resolvers_naming_different_tenants_are_refused() -> None:
    scope = http_scope("/t/globex/orders", headers=[("X-Tenant-ID", "acme")])
    with pytest.raises(InvalidTenantIdentifier):
        CHAIN.resolve(scope)


def test_chain_finds_no_tenant_when_no_resolver_does() -> None:
    assert CHAIN.resolve(http_scope("/orders")) is None


def test_error_from_a_resolver_stops_the_chain() -> None:
    # The path names a valid tenant, but a malformed header must not be skipped over.
    scope = http_scope("/t/globex/orders", headers=[("X-Tenant-ID", "NOT VALID")])
    with pytest.raises(InvalidTenantIdentifier):
        CHAIN.resolve(scope)


def test_empty_chain_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        ChainResolver()


def test_header_disagreeing_with_a_valid_token_is_unauthorized() -> None:
    secret = secrets.token_urlsafe(48)
    chain = ChainResolver(HeaderResolver("X-Tenant-ID"), JWTResolver(secret, "HS256", "tenant"))
    token = pyjwt.encode({"tenant": "globex", "exp": int(time.time()) + 60}, secret, "HS256")
    headers = [("X-Tenant-ID", "acme"), ("Authorization", f"Bearer {token}")]
    with pytest.raises(AuthenticationFailed):
        chain.resolve(http_scope(headers=headers))
    agreeing = [("X-Tenant-ID", "globex"), ("Authorization", f"Bearer {token}")]
    resolution = chain.resolve(http_scope(headers=agreeing))
    assert resolution is not None
    assert resolution.identifier == "globex"
    assert resolution.claims is not None
    assert resolution.claims["tenant"] == "globex"

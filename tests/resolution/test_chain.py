from __future__ import annotations

import pytest

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.resolution import ChainResolver, HeaderResolver, PathResolver, Resolution
from tests.resolution.scopes import http_scope

CHAIN = ChainResolver(HeaderResolver("X-Tenant-ID"), PathResolver("/t"))


def test_first_resolver_that_finds_a_tenant_wins() -> None:
    scope = http_scope("/t/globex/orders", headers=[("X-Tenant-ID", "acme")])
    assert CHAIN.resolve(scope) == Resolution("acme")


def test_later_resolver_is_tried_when_earlier_ones_find_nothing() -> None:
    scope = http_scope("/t/globex/orders")
    assert CHAIN.resolve(scope) == Resolution("globex", mount="/t/globex")


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

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.resolution import HeaderResolver, Resolution
from tests.resolution.scopes import http_scope, resolve_or_refuse

RESOLVER = HeaderResolver("X-Tenant-ID")


def test_header_value_names_the_tenant() -> None:
    scope = http_scope(headers=[("X-Tenant-ID", "acme")])
    assert RESOLVER.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize("raw_name", [b"x-tenant-id", b"X-TENANT-ID", b"X-Tenant-Id"])
def test_header_name_matches_case_insensitively(raw_name: bytes) -> None:
    resolver = HeaderResolver("x-TENANT-id")
    assert resolver.resolve(http_scope(headers=[(raw_name, "acme")])) == Resolution("acme")


def test_absent_header_names_no_tenant() -> None:
    assert RESOLVER.resolve(http_scope(headers=[("X-Other", "acme")])) is None


def test_scope_without_headers_names_no_tenant() -> None:
    assert RESOLVER.resolve({"type": "http", "path": "/"}) is None


def test_spaces_and_tabs_around_the_value_are_ignored() -> None:
    scope = http_scope(headers=[("X-Tenant-ID", " \tacme \t")])
    assert RESOLVER.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_empty_header_is_malformed(value: str) -> None:
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(http_scope(headers=[("X-Tenant-ID", value)]))


@pytest.mark.parametrize(
    "value", ["ACME", "ac_me", "-acme", "acme-", "a" * 64, "ac me", "../acme", "acme;drop"]
)
def test_malformed_header_value_is_rejected(value: str) -> None:
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(http_scope(headers=[("X-Tenant-ID", value)]))


def test_non_ascii_bytes_are_rejected() -> None:
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(http_scope(headers=[("X-Tenant-ID", "acm\xe9".encode("latin-1"))]))


def test_repeated_header_with_different_values_is_ambiguous() -> None:
    scope = http_scope(headers=[("X-Tenant-ID", "acme"), ("X-Tenant-ID", "globex")])
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(scope)


def test_repeated_header_with_identical_values_is_accepted() -> None:
    scope = http_scope(headers=[("X-Tenant-ID", "acme"), ("x-tenant-id", " acme")])
    assert RESOLVER.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize("name", ["", "X Tenant", "X-Tenant:", "X-Tenänt"])
def test_invalid_header_name_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError):
        HeaderResolver(name)


@given(values=st.lists(st.binary(max_size=80), max_size=3))
def test_any_header_value_resolves_to_a_valid_identifier_or_is_refused(
    values: list[bytes],
) -> None:
    scope = http_scope(headers=[("X-Tenant-ID", value) for value in values])
    resolve_or_refuse(RESOLVER, scope)

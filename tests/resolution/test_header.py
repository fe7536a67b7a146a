from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.resolution import HeaderResolver, Resolution
from tests.support.scopes import http_scope, resolve_or_refuse

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


def test_a_remembered_value_still_refuses_a_second_different_copy() -> None:
    resolver = HeaderResolver("X-Tenant-ID")
    assert resolver.resolve(http_scope(headers=[("X-Tenant-ID", "acme")])) == Resolution("acme")

    repeated = http_scope(headers=[("X-Tenant-ID", "acme"), ("X-Tenant-ID", "globex")])
    with pytest.raises(InvalidTenantIdentifier):
        resolver.resolve(repeated)
    mixed_case = http_scope(headers=[("X-Tenant-ID", "acme"), (b"X-Tenant-ID", "globex")])
    with pytest.raises(InvalidTenantIdentifier):
        resolver.resolve(mixed_case)


def test_malformed_values_are_refused_every_time_and_never_remembered() -> None:
    resolver = HeaderResolver("X-Tenant-ID")
    for _ in range(3):
        with pytest.raises(InvalidTenantIdentifier):
            resolver.resolve(http_scope(headers=[("X-Tenant-ID", "../etc")]))
    assert resolver._memo == {}


def test_remembered_values_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fastapi_tenancy.resolution.header.RESOLUTION_MEMO_SIZE", 3)
    resolver = HeaderResolver("X-Tenant-ID")
    for n in range(10):
        scope = http_scope(headers=[("X-Tenant-ID", f"tenant-{n}")])
        assert resolver.resolve(scope) == Resolution(f"tenant-{n}")
        assert len(resolver._memo) <= 3

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.resolution import PathResolver, Resolution
from tests.support.scopes import http_scope, resolve_or_refuse


def test_first_path_segment_names_the_tenant_without_a_prefix() -> None:
    resolution = PathResolver().resolve(http_scope("/acme/orders"))
    assert resolution == Resolution("acme", mount="/acme")


def test_segment_after_the_prefix_names_the_tenant() -> None:
    resolution = PathResolver("/t").resolve(http_scope("/t/acme/orders/7"))
    assert resolution == Resolution("acme", mount="/t/acme")


@pytest.mark.parametrize("path", ["/t/acme", "/t/acme/"])
def test_path_may_end_at_the_tenant(path: str) -> None:
    assert PathResolver("/t").resolve(http_scope(path)) == Resolution("acme", mount="/t/acme")


@pytest.mark.parametrize("path", ["/t", "/tx/acme", "/other/acme", "", "acme/orders"])
def test_path_outside_the_prefix_names_no_tenant(path: str) -> None:
    assert PathResolver("/t").resolve(http_scope(path)) is None


@pytest.mark.parametrize("path", ["/t//orders", "/t/"])
def test_empty_tenant_segment_is_malformed(path: str) -> None:
    with pytest.raises(InvalidTenantIdentifier):
        PathResolver("/t").resolve(http_scope(path))


def test_root_path_without_a_prefix_is_malformed() -> None:
    with pytest.raises(InvalidTenantIdentifier):
        PathResolver().resolve(http_scope("/"))


@pytest.mark.parametrize("segment", ["ACME", "ac_me", "acme.json", "a" * 64])
def test_malformed_tenant_segment_is_rejected(segment: str) -> None:
    with pytest.raises(InvalidTenantIdentifier):
        PathResolver("/t").resolve(http_scope(f"/t/{segment}/orders"))


def test_root_path_is_not_part_of_the_route_path() -> None:
    scope = http_scope("/api/t/acme/orders", root_path="/api")
    assert PathResolver("/t").resolve(scope) == Resolution("acme", mount="/t/acme")


def test_path_outside_root_path_is_matched_whole() -> None:
    scope = http_scope("/t/acme/orders", root_path="/api")
    assert PathResolver("/t").resolve(scope) == Resolution("acme", mount="/t/acme")


def test_root_path_matches_whole_segments_only() -> None:
    scope = http_scope("/apix/acme", root_path="/api")
    assert PathResolver().resolve(scope) == Resolution("apix", mount="/apix")


def test_path_equal_to_root_path_names_no_tenant() -> None:
    assert PathResolver("/t").resolve(http_scope("/api", root_path="/api")) is None


def test_trailing_slash_of_the_prefix_is_ignored() -> None:
    resolution = PathResolver("/t/").resolve(http_scope("/t/acme/orders"))
    assert resolution == Resolution("acme", mount="/t/acme")


def test_prefix_must_start_with_a_slash() -> None:
    with pytest.raises(ConfigurationError):
        PathResolver("t")


_PATHS = st.one_of(st.text(max_size=40), st.text(alphabet="/taATcme-_.%9\xe9", max_size=40))


@given(
    path=_PATHS, root_path=st.sampled_from(["", "/api", "/t"]), prefix=st.sampled_from(["", "/t"])
)
def test_any_path_resolves_to_a_valid_identifier_or_is_refused(
    path: str, root_path: str, prefix: str
) -> None:
    resolution = resolve_or_refuse(PathResolver(prefix), http_scope(path, root_path=root_path))
    if resolution is not None:
        assert resolution.mount == f"{prefix}/{resolution.identifier}"

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.resolution import Resolution, SubdomainResolver
from tests.support.scopes import Header, http_scope, raw_header, resolve_or_refuse

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
RESOLVER = SubdomainResolver("example.com", trusted_proxies=PROXIES)
PROXY_PEER = ("10.1.2.3", 443)
PUBLIC_PEER = ("203.0.113.7", 50000)


def host_scope(host: str, *extra: Header, client: Any = PUBLIC_PEER) -> dict[str, Any]:
    return http_scope(headers=[("host", host), *extra], client=client)


@pytest.mark.parametrize(
    "host",
    [
        "acme.example.com",
        "ACME.Example.COM",
        "acme.example.com:8000",
        "acme.example.com.",
        "acme.example.com.:8000",
        "acme.example.com:",
        " acme.example.com ",
    ],
)
def test_single_label_before_the_suffix_names_the_tenant(host: str) -> None:
    assert RESOLVER.resolve(host_scope(host)) == Resolution("acme")


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "example.com:8000",
        "EXAMPLE.COM.",
        "evilexample.com",
        "acme.example.org",
        "acme.example.com.evil.org",
        "acme.example.com:http",
        "[::1]:8000",
        "[::1]",
        "[::1",
        "127.0.0.1:8000",
        "",
    ],
)
def test_host_outside_the_suffix_names_no_tenant(host: str) -> None:
    assert RESOLVER.resolve(host_scope(host)) is None


def test_missing_host_header_names_no_tenant() -> None:
    assert RESOLVER.resolve(http_scope()) is None


@pytest.mark.parametrize(
    "host", ["a.b.example.com", ".example.com", "ac_me.example.com", "acm\xe9.example.com"]
)
def test_malformed_subdomain_is_rejected(host: str) -> None:
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(host_scope(host))


def test_conflicting_host_headers_are_rejected() -> None:
    scope = host_scope("acme.example.com", ("host", "globex.example.com"))
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(scope)


def test_trusted_proxy_chooses_tenant_with_forwarded_host() -> None:
    scope = host_scope(
        "internal.example.com", ("x-forwarded-host", "acme.example.com"), client=PROXY_PEER
    )
    assert RESOLVER.resolve(scope) == Resolution("acme")


def test_only_the_forwarded_host_the_trusted_proxy_appended_counts() -> None:
    # A proxy that appends keeps whatever the client sent in front of its own value.
    scope = host_scope(
        "internal.example.com",
        ("x-forwarded-host", "globex.example.com, initech.example.com"),
        ("x-forwarded-host", " acme.example.com:443 "),
        client=PROXY_PEER,
    )
    assert RESOLVER.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize(
    "forwarded",
    [
        "host=acme.example.com",
        'Host="acme.example.com:8443"',
        "for=192.0.2.60;proto=https;host=acme.example.com;by=10.0.0.1",
        'for="[2001:db8::1]:4711";host=acme.example.com',
        "host=globex.example.com, for=10.0.0.2;host=acme.example.com",
        'host="globex.example.com,x"; for=1, host=acme.example.com',
        ' host="a\\cme.example.com" ',
    ],
)
def test_trusted_proxy_chooses_tenant_with_the_last_forwarded_element(forwarded: str) -> None:
    scope = host_scope("internal.example.com", ("forwarded", forwarded), client=PROXY_PEER)
    assert RESOLVER.resolve(scope) == Resolution("acme")


def test_forwarded_elements_split_across_headers_are_one_list() -> None:
    scope = host_scope(
        "internal.example.com",
        ("forwarded", "host=globex.example.com"),
        ("forwarded", "for=10.0.0.2;host=acme.example.com"),
        client=PROXY_PEER,
    )
    assert RESOLVER.resolve(scope) == Resolution("acme")


def test_last_forwarded_element_without_a_host_falls_back_to_the_other_headers() -> None:
    # The client's own element names globex; the proxy's element names no host at all.
    scope = host_scope(
        "acme.example.com",
        ("forwarded", "host=globex.example.com, for=192.0.2.1"),
        client=PROXY_PEER,
    )
    assert RESOLVER.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize(
    "forwarded",
    [
        "host",
        "host=a.example.com;;",
        'host="acme.example.com',
        "host=acme.example.com;host=globex.example.com",
        "=acme.example.com",
        "host=acme example.com",
        "host=a,,host=b",
    ],
)
def test_malformed_forwarded_header_from_a_trusted_proxy_is_rejected(forwarded: str) -> None:
    scope = host_scope("acme.example.com", ("forwarded", forwarded), client=PROXY_PEER)
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(scope)


def test_forwarded_and_x_forwarded_host_must_agree() -> None:
    agreeing = host_scope(
        "internal.example.com",
        ("forwarded", "host=ACME.example.com:443"),
        ("x-forwarded-host", "acme.example.com"),
        client=PROXY_PEER,
    )
    assert RESOLVER.resolve(agreeing) == Resolution("acme")
    disagreeing = host_scope(
        "internal.example.com",
        ("forwarded", "host=acme.example.com"),
        ("x-forwarded-host", "globex.example.com"),
        client=PROXY_PEER,
    )
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(disagreeing)


def test_trusted_proxy_without_forwarded_host_falls_back_to_host() -> None:
    assert RESOLVER.resolve(host_scope("acme.example.com", client=PROXY_PEER)) == Resolution("acme")


def test_forwarded_host_from_a_trusted_proxy_is_validated() -> None:
    scope = host_scope(
        "acme.example.com", ("x-forwarded-host", "a.b.example.com"), client=PROXY_PEER
    )
    with pytest.raises(InvalidTenantIdentifier):
        RESOLVER.resolve(scope)


@pytest.mark.parametrize(
    "client",
    [
        PUBLIC_PEER,
        ("11.0.0.1", 1),
        ("fe00::1", 1),
        None,
        (),
        ("testclient", 50000),
        ("/run/app.sock", None),
        (None, None),
        ("", 0),
        "10.1.2.3",
        42,
    ],
)
def test_untrusted_peer_cannot_choose_tenant_with_forwarded_host(client: Any) -> None:
    scope = host_scope(
        "acme.example.com",
        ("x-forwarded-host", "globex.example.com"),
        ("forwarded", "host=initech.example.com"),
        client=client,
    )
    assert RESOLVER.resolve(scope) == Resolution("acme")


def test_scope_without_client_is_untrusted() -> None:
    scope = host_scope("acme.example.com", ("x-forwarded-host", "globex.example.com"))
    del scope["client"]
    assert RESOLVER.resolve(scope) == Resolution("acme")


def test_forwarded_host_is_ignored_when_no_proxy_is_trusted() -> None:
    resolver = SubdomainResolver("example.com")
    scope = host_scope(
        "acme.example.com", ("x-forwarded-host", "globex.example.com"), client=PROXY_PEER
    )
    assert resolver.resolve(scope) == Resolution("acme")


@pytest.mark.parametrize("peer", ["fd12::7", "::ffff:10.9.9.9"])
def test_trusted_ipv6_and_ipv4_mapped_peers_are_recognised(peer: str) -> None:
    scope = host_scope(
        "internal.example.com", ("x-forwarded-host", "acme.example.com"), client=(peer, 443)
    )
    assert RESOLVER.resolve(scope) == Resolution("acme")


def test_domain_suffix_is_normalised() -> None:
    resolver = SubdomainResolver(" .Example.COM. ")
    assert resolver.domain_suffix == "example.com"
    assert resolver.resolve(host_scope("acme.example.com")) == Resolution("acme")


@pytest.mark.parametrize("suffix", ["", " ", "."])
def test_empty_domain_suffix_is_a_configuration_error(suffix: str) -> None:
    with pytest.raises(ConfigurationError):
        SubdomainResolver(suffix)


_HOSTS = st.one_of(
    st.binary(max_size=60),
    st.text(alphabet="aAcme-_.:[]19 \xe9", max_size=30).map(lambda s: s + ".example.com"),
    st.from_regex(r"[a-z0-9.\-]{0,20}\.example\.com(:[0-9]{0,5})?\.?", fullmatch=True),
)
_CLIENTS = st.one_of(
    st.none(),
    st.sampled_from([PROXY_PEER, PUBLIC_PEER, ("::ffff:10.0.0.1", 1), ("garbage", 1), ()]),
    st.tuples(st.text(max_size=20), st.integers()),
    st.integers(),
    st.text(max_size=10),
)


@given(
    hosts=st.lists(_HOSTS, max_size=2),
    forwarded=st.lists(_HOSTS, max_size=2),
    client=_CLIENTS,
)
def test_any_host_resolves_to_a_valid_identifier_or_is_refused(
    hosts: list[str | bytes], forwarded: list[str | bytes], client: Any
) -> None:
    headers: list[Header] = [("host", host) for host in hosts]
    headers += [("x-forwarded-host", host) for host in forwarded]
    headers += [("forwarded", b"for=x;host=" + raw_header(host)) for host in forwarded]
    resolve_or_refuse(RESOLVER, http_scope(headers=headers, client=client))

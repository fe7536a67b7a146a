"""Subdomain strategy: ``acme.example.com`` names tenant ``acme``."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from fastapi_tenancy.domains import mappable_host
from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.models import validate_identifier
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.resolution.header import header_values
from fastapi_tenancy.types import Scope

__all__ = ["SubdomainResolver"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One ``name=value`` pair of a Forwarded element and what follows it (RFC 7239, section 4). Values
# are tokens or quoted strings; unquoted "host:port" values are common, so ":" and "[]" pass too.
_FORWARDED_PAIR = re.compile(
    r"""[ \t]*(?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]+)=(?P<value>"(?:[^"\\]|\\.)*"|[^;,"\s]*)"""
    r"[ \t]*(?P<separator>[;,]|\Z)"
)
_QUOTED_PAIR = re.compile(r"\\(.)")


def _strip_port(host: str) -> str:
    if host.startswith("["):
        # An IPv6 literal such as "[::1]:8000": its colons are not a port separator.
        end = host.find("]")
        return host if end == -1 else host[: end + 1]
    name, colon, port = host.rpartition(":")
    if colon and (port.isdigit() or not port):
        return name
    return host


def _last_x_forwarded_host(scope: Scope) -> str | None:
    values = header_values(scope, b"x-forwarded-host")
    if not values:
        return None
    # Each proxy appends; only the last value is written by the trusted proxy itself, anything
    # before it may have come from the client.
    return ",".join(values).rsplit(",", 1)[-1]


def _last_forwarded_host(scope: Scope) -> str | None:
    values = header_values(scope, b"forwarded")
    if not values:
        return None
    elements = _parse_forwarded(",".join(values))
    # As with X-Forwarded-Host, only the element the trusted proxy appended counts.
    return elements[-1].get("host") if elements else None


def _parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of an RFC 7239 ``Forwarded`` value; a malformed value is refused."""
    elements: list[dict[str, str]] = [{}]
    position = 0
    while position < len(value):
        match = _FORWARDED_PAIR.match(value, position)
        if match is None:
            raise InvalidTenantIdentifier()
        name, raw, separator = match.group("name", "value", "separator")
        if raw.startswith('"'):
            raw = _QUOTED_PAIR.sub(r"\1", raw[1:-1])
        name = name.lower()
        if name in elements[-1]:
            # RFC 7239 forbids repeating a parameter in one element; which copy counts is a guess.
            raise InvalidTenantIdentifier()
        elements[-1][name] = raw
        if separator == ",":
            elements.append({})
        position = match.end()
    return [element for element in elements if element]


def _forwarded_host(scope: Scope) -> str | None:
    """The host a trusted proxy reports, from ``Forwarded`` or ``X-Forwarded-Host``."""
    standard = _last_forwarded_host(scope)
    legacy = _last_x_forwarded_host(scope)
    if standard is not None and legacy is not None:
        if _normalise_host(standard) != _normalise_host(legacy):
            # Two proxies disagree about the host; refuse to guess which one is right.
            raise InvalidTenantIdentifier()
    return standard if standard is not None else legacy


def _normalise_host(host: str) -> str:
    host = _strip_port(host.strip(" \t").lower())
    # "acme.example.com." is the same name written fully qualified.
    return host.removesuffix(".")


class SubdomainResolver:
    """Reads the tenant identifier from the one label in front of ``domain_suffix``.

    ``SubdomainResolver("example.com")`` resolves ``Host: acme.example.com:8000`` to ``"acme"``.
    The host a proxy reports (``Forwarded: host=...`` or ``X-Forwarded-Host``) is used instead of
    ``Host`` only when the peer is a trusted proxy, and only the value that proxy appended (the
    last one) counts, since earlier values may come from the client::

        SubdomainResolver("example.com", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))

    With ``custom_domains``, any other host name (``acme.com``) is handed to the lookup as
    `Resolution.host`, to be mapped to the tenant that owns it; the same proxy rules decide
    which host the request asked for.
    """

    def __init__(
        self,
        domain_suffix: str,
        trusted_proxies: Iterable[IPNetwork] = (),
        *,
        custom_domains: bool = False,
    ) -> None:
        suffix = domain_suffix.strip().lower().strip(".")
        if not suffix:
            raise ConfigurationError("domain_suffix must be a domain such as 'example.com'")
        self.domain_suffix = suffix
        self.trusted_proxies = tuple(trusted_proxies)
        self._dotted_suffix = "." + suffix
        self.custom_domains = custom_domains

    def resolve(self, scope: Scope) -> Resolution | None:
        host = self._requested_host(scope)
        if host is None:
            return None
        host = _normalise_host(host)
        if not host.endswith(self._dotted_suffix):
            if not self.custom_domains or host == self.domain_suffix:
                return None
            mapped = mappable_host(host)
            return None if mapped is None else Resolution("", host=mapped)
        label = host[: -len(self._dotted_suffix)]
        if "." in label:
            # "a.b.example.com": nested subdomains never name a tenant.
            raise InvalidTenantIdentifier()
        return Resolution(validate_identifier(label))

    def _requested_host(self, scope: Scope) -> str | None:
        if self._peer_is_trusted(scope):
            forwarded = _forwarded_host(scope)
            if forwarded is not None:
                return forwarded
        hosts = set(header_values(scope, b"host"))
        if len(hosts) > 1:
            raise InvalidTenantIdentifier()
        return hosts.pop() if hosts else None

    def _peer_is_trusted(self, scope: Scope) -> bool:
        if not self.trusted_proxies:
            return False
        client = scope.get("client")
        peer = client[0] if isinstance(client, tuple | list) and client else None
        if not isinstance(peer, str):
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # Dual-stack sockets report IPv4 peers as "::ffff:10.0.0.1".
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted_proxies)

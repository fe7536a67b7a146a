"""Subdomain strategy: ``acme.example.com`` names tenant ``acme``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.models import validate_identifier
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.resolution.header import header_values
from fastapi_tenancy.types import Scope

__all__ = ["SubdomainResolver"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _strip_port(host: str) -> str:
    if host.startswith("["):
        # An IPv6 literal such as "[::1]:8000": its colons are not a port separator.
        end = host.find("]")
        return host if end == -1 else host[: end + 1]
    name, colon, port = host.rpartition(":")
    if colon and (port.isdigit() or not port):
        return name
    return host


def _normalise_host(host: str) -> str:
    host = _strip_port(host.strip(" \t").lower())
    # "acme.example.com." is the same name written fully qualified.
    return host.removesuffix(".")


class SubdomainResolver:
    """Reads the tenant identifier from the one label in front of ``domain_suffix``.

    ``SubdomainResolver("example.com")`` resolves ``Host: acme.example.com:8000`` to ``"acme"``.
    ``X-Forwarded-Host`` is used instead of ``Host`` only when the peer is a trusted proxy::

        SubdomainResolver("example.com", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    """

    def __init__(self, domain_suffix: str, trusted_proxies: Iterable[IPNetwork] = ()) -> None:
        suffix = domain_suffix.strip().lower().strip(".")
        if not suffix:
            raise ConfigurationError("domain_suffix must be a domain such as 'example.com'")
        self.domain_suffix = suffix
        self.trusted_proxies = tuple(trusted_proxies)
        self._dotted_suffix = "." + suffix

    def resolve(self, scope: Scope) -> Resolution | None:
        host = self._requested_host(scope)
        if host is None:
            return None
        host = _normalise_host(host)
        if not host.endswith(self._dotted_suffix):
            return None
        label = host[: -len(self._dotted_suffix)]
        if "." in label:
            # "a.b.example.com": nested subdomains never name a tenant.
            raise InvalidTenantIdentifier()
        return Resolution(validate_identifier(label))

    def _requested_host(self, scope: Scope) -> str | None:
        if self._peer_is_trusted(scope):
            forwarded = header_values(scope, b"x-forwarded-host")
            if forwarded:
                # Each proxy appends; the first value is the host the client asked for.
                return ",".join(forwarded).split(",", 1)[0]
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

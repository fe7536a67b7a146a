"""Custom domains: full host names (``acme.com``, ``app.acme.com``) that name a tenant.

Besides ``<identifier>.<domain_suffix>``, a tenant may own any number of host names, kept in the
central ``tenancy_domains`` table, each owned by at most one tenant. Every name is stored in one
normal form (`normalise_domain`): lower case, IDNA (``bücher.de`` is ``xn--bcher-kva.de``), with
no port and no trailing dot, so the host a request carries is compared byte for byte.

Resolution stays pure: the subdomain resolver hands a host it cannot read as
``<identifier>.<domain_suffix>`` to the lookup (`Resolution.host`), which maps it to a tenant
through the cache (`fastapi_tenancy.lookup.TenantLookup.find_host`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from fastapi_tenancy.exceptions import TenancyError, TenantAlreadyExists
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.observe.events import Event

__all__ = [
    "Domain",
    "DomainAlreadyExists",
    "DomainChanged",
    "InvalidDomain",
    "mappable_host",
    "normalise_domain",
]

MAX_DOMAIN_LENGTH = 253

# An ASCII host name: dot-separated LDH labels of 1-63 characters, no hyphen at either end, and
# at least two labels (a bare "localhost" or "intranet" is never a tenant's domain).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")


class InvalidDomain(TenancyError):
    """The name is not a host name a tenant can own (an IP address, a port, a bad label...)."""

    status_code = 422
    public_detail = "Invalid domain"


class DomainAlreadyExists(TenantAlreadyExists):
    """Another tenant (or this one) already owns the domain; a domain has one owner."""

    public_detail = "Domain already exists"


@dataclass(frozen=True, slots=True)
class Domain:
    """A host name owned by the tenant with ``tenant_id``."""

    host: str
    tenant_id: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainChanged(Event):
    """A custom domain was added to or removed from ``tenant`` (the record at that moment).

    Emitted after the change is stored and every process's cache was told to forget the host.
    """

    action: Literal["add", "remove"]
    tenant: Tenant
    host: str


def _is_ascii_host(host: str) -> bool:
    if len(host) > MAX_DOMAIN_LENGTH or _HOST.fullmatch(host) is None:
        return False
    # "10.0.0.1" matches the label grammar; a numeric top label means an address, not a name.
    return not host.rpartition(".")[2].isdigit()


def mappable_host(host: str) -> str | None:
    """``host`` if a request's (already lower-cased, port-free) host could be a custom domain.

    Pure and cheap, for the request path: no IDNA processing, since clients send the ASCII
    (``xn--``) form. Anything else, an IP literal included, maps to no tenant.
    """
    return host if host.isascii() and _is_ascii_host(host) else None


def normalise_domain(name: str) -> str:
    """The stored form of the domain ``name``; raises `InvalidDomain` when it is not one.

    ``"App.ACME.com."``, ``"app.acme.com:443"`` and ``"app.acme.com"`` are one domain;
    ``"Bücher.de"`` is stored as ``"xn--bcher-kva.de"``.
    """
    host = name.strip().lower()
    if host.startswith("[") or _is_ip(host):
        raise InvalidDomain(f"{name!r} is an IP address; a tenant's domain is a host name")
    head, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = head
    host = host.removesuffix(".")
    if not host.isascii():
        import idna  # a dependency of anyio, hence always installed with FastAPI

        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidDomain(
                f"{name!r} is not a valid internationalised domain: {exc}"
            ) from None
    if not _is_ascii_host(host):
        raise InvalidDomain(
            f"{name!r} is not a host name: use at least two dot-separated labels of letters, "
            "digits and inner hyphens (at most 63 characters each, 253 in all)"
        )
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

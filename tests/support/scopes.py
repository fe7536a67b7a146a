"""Small builders shared by the resolution tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi_tenancy.exceptions import AuthenticationFailed, InvalidTenantIdentifier
from fastapi_tenancy.models import IDENTIFIER_PATTERN
from fastapi_tenancy.resolution import Resolution, TenantResolver

Header = tuple[str | bytes, str | bytes]


def raw_header(value: str | bytes) -> bytes:
    """A header value as ASGI carries it: ``str`` encoded as latin-1, ``bytes`` kept."""
    return value.encode("latin-1") if isinstance(value, str) else value


def http_scope(
    path: str = "/",
    *,
    headers: Iterable[Header] = (),
    client: Any = ("203.0.113.7", 50000),
    root_path: str = "",
) -> dict[str, Any]:
    """An HTTP scope; ``str`` header names are lower-cased as ASGI servers do, bytes kept raw."""
    return {
        "type": "http",
        "path": path,
        "root_path": root_path,
        "headers": [
            (name.lower().encode("latin-1") if isinstance(name, str) else name, raw_header(value))
            for name, value in headers
        ],
        "client": client,
    }


def resolve_or_refuse(resolver: TenantResolver, scope: dict[str, Any]) -> Resolution | None:
    """Resolve ``scope``, allowing only the outcomes the resolver contract permits."""
    try:
        resolution = resolver.resolve(scope)
    except (InvalidTenantIdentifier, AuthenticationFailed):
        return None
    if resolution is not None:
        assert IDENTIFIER_PATTERN.fullmatch(resolution.identifier)
    return resolution

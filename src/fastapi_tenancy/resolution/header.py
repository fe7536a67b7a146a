"""Header strategy: the tenant identifier is the value of one request header."""

from __future__ import annotations

import re

from fastapi_tenancy.exceptions import ConfigurationError, InvalidTenantIdentifier
from fastapi_tenancy.models import validate_identifier
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.types import Scope

__all__ = ["HeaderResolver", "header_values"]

# RFC 9110 token characters: anything else can never arrive as a header name.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Optional whitespace around a field value (RFC 9110 section 5.5).
_OWS = " \t"
RESOLUTION_MEMO_SIZE = 10_000


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of header ``name`` (lower-case bytes) in ``scope``, decoded as latin-1.

    Latin-1 maps every byte to one character, so decoding never fails and non-ASCII bytes survive
    as non-ASCII characters that identifier validation then rejects.
    """
    size = len(name)
    # ASGI servers send lower-case names; the length test keeps lower() off most other headers.
    return [
        value.decode("latin-1")
        for key, value in scope.get("headers", ())
        if len(key) == size and key.lower() == name
    ]


class HeaderResolver:
    """Reads the tenant identifier from a request header, matched case-insensitively.

    ``HeaderResolver("X-Tenant-ID")`` resolves ``X-Tenant-ID: acme`` to ``"acme"``.
    """

    def __init__(self, header_name: str) -> None:
        if _HEADER_NAME.fullmatch(header_name) is None:
            raise ConfigurationError(f"{header_name!r} is not a valid HTTP header name")
        self.header_name = header_name
        self._key = header_name.lower().encode("ascii")
        # Raw header value -> its validated Resolution. Decoding, validating and building the
        # Resolution is most of this resolver's cost, and a warm app sees the same few values.
        # Only valid values are kept, and at most RESOLUTION_MEMO_SIZE of them.
        self._memo: dict[bytes, Resolution] = {}

    def resolve(self, scope: Scope) -> Resolution | None:
        key = self._key
        raw: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == key:
                if raw is not None:
                    return self._resolve_slowly(scope)  # repeated: compare every copy
                raw = value
            elif len(name) == len(key) and name.lower() == key:
                return self._resolve_slowly(scope)  # a server that did not lower-case names
        if raw is None:
            return None
        resolution = self._memo.get(raw)
        if resolution is None:
            # Raises for a malformed value, which therefore is never remembered.
            resolution = Resolution(validate_identifier(raw.decode("latin-1").strip(_OWS)))
            if len(self._memo) >= RESOLUTION_MEMO_SIZE:
                self._memo.clear()
            self._memo[raw] = resolution
        return resolution

    def _resolve_slowly(self, scope: Scope) -> Resolution | None:
        values = header_values(scope, self._key)
        if not values:
            return None
        value = values[0].strip(_OWS)
        if any(other.strip(_OWS) != value for other in values[1:]):
            # Proxies and the app could each pick a different copy; refuse to guess.
            raise InvalidTenantIdentifier()
        return Resolution(validate_identifier(value))

"""Moved to `fastapi_tenancy.resolution.jwks`; this path re-exports it until the next release.

Each name read here warns (`DeprecationWarning`); import it from the new path.
"""

from __future__ import annotations

from typing import Any

from fastapi_tenancy._deprecation import moved_attribute

_MOVED = ["JWKSError", "JWKSKeys", "parse_jwks"]


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, "fastapi_tenancy.resolution.jwks", name, _MOVED)

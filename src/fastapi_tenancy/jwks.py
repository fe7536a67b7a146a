"""Moved to `fastapi_tenancy.resolution.jwks`; this path re-exports it for one release."""

from fastapi_tenancy.resolution.jwks import JWKSError, JWKSKeys, parse_jwks

__all__ = ["JWKSError", "JWKSKeys", "parse_jwks"]

"""JWT strategy: a verified bearer token names the tenant in one of its claims."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi_tenancy.config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS
from fastapi_tenancy.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    InvalidTenantIdentifier,
)
from fastapi_tenancy.models import validate_identifier
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.resolution.header import header_values
from fastapi_tenancy.types import Scope

if TYPE_CHECKING:
    from jwt import PyJWT

__all__ = ["JWTResolver"]

_INSTALL_HINT = "install it with: pip install 'fastapi-tenancy[jwt]'"


def _bearer_token(scope: Scope) -> str | None:
    values = header_values(scope, b"authorization")
    if not values:
        return None
    if len(values) > 1:
        # Different hops could verify different copies; accept none of them.
        raise AuthenticationFailed()
    scheme, _, token = values[0].strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip(" \t")
    if not token:
        raise AuthenticationFailed()
    return token


def _prepare_key(secret: str, algorithm: str) -> Any:
    # Parsing a PEM key costs far more than verifying a signature, so it happens once, here.
    from jwt import PyJWTError
    from jwt.algorithms import get_default_algorithms

    verifier = get_default_algorithms().get(algorithm)
    if verifier is None:
        raise ConfigurationError(f"jwt_algorithm {algorithm} needs 'cryptography'; {_INSTALL_HINT}")
    if algorithm in ASYMMETRIC_ALGORITHMS and "PRIVATE KEY-----" in secret:
        raise ConfigurationError(
            "TENANCY_JWT_SECRET holds a private key; set it to the PEM public key, which is all "
            "that verifying a token needs"
        )
    try:
        key = verifier.prepare_key(secret)
    except (PyJWTError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"TENANCY_JWT_SECRET is not a usable {algorithm} key (HS* takes a secret string, "
            "RS*/PS*/ES*/EdDSA a PEM public key)"
        ) from exc
    # Older PyJWT releases have no key length check.
    check_key_length = getattr(verifier, "check_key_length", None)
    weakness = check_key_length(key) if check_key_length is not None else None
    if weakness:
        raise ConfigurationError(f"TENANCY_JWT_SECRET is too weak for {algorithm}: {weakness}")
    return key


class JWTResolver:
    """Reads the tenant identifier from a claim of a verified ``Authorization: Bearer`` token.

    ``JWTResolver(secret, "HS256", "tenant")`` resolves a valid token with
    ``{"tenant": "acme", "exp": ...}`` to ``"acme"``, carrying the verified claims along.
    """

    def __init__(
        self,
        secret: str,
        algorithm: str,
        tenant_claim: str,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise ConfigurationError(
                f"resolution strategy 'jwt' needs PyJWT; {_INSTALL_HINT}"
            ) from exc
        if algorithm not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(f"jwt_algorithm {algorithm!r} is not supported")
        if not tenant_claim:
            raise ConfigurationError("jwt_tenant_claim must name a claim")
        self.algorithm = algorithm
        self.tenant_claim = tenant_claim
        self.audience = audience
        self.issuer = issuer
        self._key = _prepare_key(secret, algorithm)
        self._decoder: PyJWT = jwt.PyJWT()
        # Older PyJWT releases let a malformed numeric claim (exp: [] or 1e999) escape as a
        # built-in error; it is still an unacceptable token.
        self._errors: tuple[type[Exception], ...] = (
            jwt.PyJWTError,
            ValueError,
            TypeError,
            OverflowError,
        )

    def resolve(self, scope: Scope) -> Resolution | None:
        token = _bearer_token(scope)
        if token is None:
            return None
        try:
            claims = self._decoder.decode(
                token,
                self._key,
                # Pinned: the token's own "alg" header never chooses how it is verified.
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"]},
            )
        except self._errors as exc:
            raise AuthenticationFailed() from exc
        identifier = claims.get(self.tenant_claim)
        if not isinstance(identifier, str):
            raise AuthenticationFailed()
        try:
            validate_identifier(identifier)
        except InvalidTenantIdentifier:
            raise AuthenticationFailed() from None
        return Resolution(identifier, claims=claims)

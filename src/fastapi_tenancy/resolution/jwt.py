"""JWT strategy: a verified bearer token names the tenant in one of its claims."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

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

__all__ = ["DEFAULT_LEEWAY", "JWTResolver", "SigningKeys", "UnknownSigningKey"]

# Seconds of clock skew tolerated on exp, nbf and iat: enough for servers kept in time by NTP, too
# little to stretch a token's life in any way that matters.
DEFAULT_LEEWAY = 10.0

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


class SigningKeys(Protocol):
    """Verification keys selected by the token's ``kid`` header (a JWKS, `JWKSKeys`)."""

    def get(self, kid: str) -> Any | None: ...


class UnknownSigningKey(AuthenticationFailed):
    """The token names a ``kid`` the key set does not hold; refreshing the keys may help once."""


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


# Registered claims that are NumericDates (RFC 7519, section 2): JSON numbers. PyJWT converts a
# string such as "1900000000" with int(), so a string would otherwise pass.
TIME_CLAIMS = ("exp", "nbf", "iat")


def _numeric_date(claims: dict[str, Any], name: str) -> bool:
    """``claims[name]`` is absent or a JSON number (``true`` is not one)."""
    value = claims.get(name, 0)
    return isinstance(value, int | float) and not isinstance(value, bool)


class JWTResolver:
    """Reads the tenant identifier from a claim of a verified ``Authorization: Bearer`` token.

    ``JWTResolver(secret, "HS256", "tenant")`` resolves a valid token with
    ``{"tenant": "acme", "exp": ...}`` to ``"acme"``, carrying the verified claims along.
    ``key`` is the HMAC secret or the PEM public key, or `SigningKeys` (a JWKS) from which the
    token's ``kid`` header picks the key; a ``kid`` the set does not hold raises
    `UnknownSigningKey`. ``leeway`` is the clock skew, in seconds, tolerated on ``exp``, ``nbf``
    and ``iat``.
    """

    def __init__(
        self,
        key: str | SigningKeys,
        algorithm: str,
        tenant_claim: str,
        audience: str | None = None,
        issuer: str | None = None,
        *,
        leeway: float = DEFAULT_LEEWAY,
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
        if leeway < 0:
            raise ConfigurationError("the JWT leeway cannot be negative")
        self.algorithm = algorithm
        self.tenant_claim = tenant_claim
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        if isinstance(key, str):
            self._key: Any = _prepare_key(key, algorithm)
            self._keys: SigningKeys | None = None
        else:
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise ConfigurationError(
                    f"keys selected by kid are public keys; {algorithm} is not asymmetric"
                )
            self._key = None
            self._keys = key
        self._decoder: PyJWT = jwt.PyJWT()
        self._headers = jwt.PyJWS()
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
        key = self._key if self._keys is None else self._key_for(self._keys, token)
        try:
            claims = self._decoder.decode(
                token,
                key,
                # Pinned: the token's own "alg" header never chooses how it is verified.
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"]},
            )
        except self._errors as exc:
            raise AuthenticationFailed() from exc
        if not all(_numeric_date(claims, name) for name in TIME_CLAIMS):
            raise AuthenticationFailed()
        identifier = claims.get(self.tenant_claim)
        if not isinstance(identifier, str):
            raise AuthenticationFailed()
        try:
            validate_identifier(identifier)
        except InvalidTenantIdentifier:
            raise AuthenticationFailed() from None
        return Resolution(identifier, claims=claims)

    def _key_for(self, keys: SigningKeys, token: str) -> Any:
        try:
            kid = self._headers.get_unverified_header(token).get("kid")
        except self._errors as exc:
            raise AuthenticationFailed() from exc
        if not isinstance(kid, str) or not kid:
            # With several keys in play, a token that names none cannot be checked.
            raise AuthenticationFailed()
        key = keys.get(kid)
        if key is None:
            raise UnknownSigningKey()
        return key

"""JWT strategy: a verified bearer token names the tenant in one of its claims.

The crypto policy lives here, once: which algorithms are accepted, how strong an HMAC secret must
be, that a public-key algorithm gets a public key, and that a JWKS is fetched over HTTPS.
`TenancyConfig` validates its ``jwt_*`` settings with `check_jwt_settings`; `JWTResolver` and
`JWKSKeys` check their own arguments with `check_algorithm`.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

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

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_LEEWAY",
    "HMAC_ALGORITHMS",
    "HMAC_MIN_SECRET_BYTES",
    "JWTResolver",
    "SigningKeys",
    "UnknownSigningKey",
    "check_algorithm",
    "check_jwt_settings",
]

# An HMAC key shorter than the hash output weakens the signature (RFC 7518, section 3.2).
HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
HMAC_ALGORITHMS = frozenset(HMAC_MIN_SECRET_BYTES)
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Values copied from tutorials and .env templates; a token signed with one of them is forgeable.
PLACEHOLDER_SECRET_PREFIXES = (
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "replace_me",
    "your-secret",
    "your_secret",
    "yoursecret",
    "secret",
    "placeholder",
    "example",
    "dummy",
    "insecure",
)

# Seconds of clock skew tolerated on exp, nbf and iat: enough for servers kept in time by NTP, too
# little to stretch a token's life in any way that matters.
DEFAULT_LEEWAY = 10.0

_INSTALL_HINT = "install it with: pip install 'fastapi-tenancy-kit[jwt]'"


def check_algorithm(algorithm: str, *, public_keys: bool = False) -> None:
    """Raise `ConfigurationError` unless ``algorithm`` is accepted (and asymmetric, when the keys
    are published public keys: a JWKS, keys chosen by ``kid``)."""
    if algorithm not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
        raise ConfigurationError(
            f"jwt_algorithm {algorithm!r} is not supported; use one of "
            f"{', '.join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))}"
        )
    if public_keys and algorithm not in ASYMMETRIC_ALGORITHMS:
        raise ConfigurationError(
            f"a JWKS publishes public keys; jwt_algorithm {algorithm} is not asymmetric "
            "(use e.g. RS256 or ES256)"
        )


def check_jwt_settings(algorithm: str, secret: str | None, jwks_url: str | None) -> None:
    """Raise `ConfigurationError` with what to change unless the JWT settings are safe to use.

    One key (``secret``: an HMAC secret long enough for the algorithm and no placeholder, or a PEM
    public key) or a JWKS at an ``https://`` URL (plain HTTP only on loopback), never both.
    """
    check_algorithm(algorithm, public_keys=jwks_url is not None)
    if jwks_url is not None:
        if secret is not None:
            raise ConfigurationError(
                "set either TENANCY_JWT_SECRET (one key) or TENANCY_JWT_JWKS_URL (keys chosen by "
                "kid), not both"
            )
        parts = urlsplit(jwks_url)
        local = parts.scheme == "http" and _is_loopback(parts.hostname)
        if parts.scheme != "https" and not local:
            # Keys fetched over plain HTTP can be swapped in transit, and with them any token.
            raise ConfigurationError("TENANCY_JWT_JWKS_URL must be an https:// URL")
        return
    if secret is None or not secret.strip():
        raise ConfigurationError(
            "resolution_strategy 'jwt' needs TENANCY_JWT_SECRET: the HMAC secret for HS* "
            "algorithms, or the PEM public key for RS*/PS*/ES*/EdDSA"
        )
    if algorithm in HMAC_ALGORITHMS:
        minimum = HMAC_MIN_SECRET_BYTES[algorithm]
        if len(secret.encode()) < minimum:
            raise ConfigurationError(
                f"TENANCY_JWT_SECRET is shorter than {minimum} bytes, the minimum for "
                f"{algorithm}; generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
            )
        lowered = secret.strip().lower()
        if lowered.startswith(PLACEHOLDER_SECRET_PREFIXES) or len(set(secret)) < 8:
            raise ConfigurationError(
                "TENANCY_JWT_SECRET looks like a placeholder; generate a real one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
    elif "-----BEGIN" not in secret or "PRIVATE KEY" in secret:
        raise ConfigurationError(
            f"jwt_algorithm {algorithm} verifies with a public key: set "
            "TENANCY_JWT_SECRET to the PEM-encoded public key (never the private key)"
        )


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        check_algorithm(algorithm, public_keys=not isinstance(key, str))
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

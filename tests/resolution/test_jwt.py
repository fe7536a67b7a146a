from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from fastapi_tenancy.exceptions import AuthenticationFailed, ConfigurationError
from fastapi_tenancy.models import IDENTIFIER_PATTERN
from fastapi_tenancy.resolution import JWTResolver, Resolution
from fastapi_tenancy.resolution.jwt import DEFAULT_LEEWAY
from tests.support.scopes import http_scope, resolve_or_refuse

SECRET = secrets.token_urlsafe(48)
RESOLVER = JWTResolver(SECRET, "HS256", "tenant")

RSA_PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEYS: dict[str, Any] = {
    "RS256": RSA_PRIVATE,
    "PS256": RSA_PRIVATE,
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def public_pem(private_key: Any) -> str:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return str(public.decode())


def private_pem(private_key: Any) -> str:
    private = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return str(private.decode())


RSA_PUBLIC_PEM = public_pem(RSA_PRIVATE)


def claims(**extra: Any) -> dict[str, Any]:
    return {"tenant": "acme", "exp": int(time.time()) + 300, **extra}


def token_scope(token: str, scheme: str = "Bearer") -> dict[str, Any]:
    return http_scope(headers=[("authorization", f"{scheme} {token}")])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: Any, hmac_key: bytes | None) -> str:
    """A token built by hand, the way an attacker would, with an HS256 signature or none."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    digest = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(digest)}"


def test_valid_token_names_the_tenant_and_carries_its_claims() -> None:
    payload = claims(sub="user-1", role="admin")
    resolution = RESOLVER.resolve(token_scope(pyjwt.encode(payload, SECRET, algorithm="HS256")))
    assert resolution == Resolution("acme")
    assert resolution.claims == payload


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_bearer_scheme_matches_case_insensitively(scheme: str) -> None:
    token = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    assert RESOLVER.resolve(token_scope(token, scheme)) == Resolution("acme")


def test_missing_authorization_header_names_no_tenant() -> None:
    assert RESOLVER.resolve(http_scope()) is None


@pytest.mark.parametrize("value", ["Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Token abc", "Bearertoken"])
def test_other_authorization_schemes_name_no_tenant(value: str) -> None:
    assert RESOLVER.resolve(http_scope(headers=[("authorization", value)])) is None


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer \t "])
def test_bearer_without_a_token_is_rejected(value: str) -> None:
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(http_scope(headers=[("authorization", value)]))


def test_several_authorization_headers_are_rejected() -> None:
    token = pyjwt.encode(claims(), SECRET, algorithm="HS256")
    header = ("authorization", f"Bearer {token}")
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(http_scope(headers=[header, header]))


@pytest.mark.parametrize(
    "make_token",
    # Built when the test runs, not at collection: times are relative to the check.
    [
        lambda: "not-a-token",
        lambda: "a.b.c",
        lambda: "a.b",
        lambda: pyjwt.encode(claims(), SECRET, algorithm="HS256") + "x",
        lambda: pyjwt.encode(claims(), secrets.token_urlsafe(48), algorithm="HS256"),
        lambda: pyjwt.encode(claims(), SECRET, algorithm="HS512"),
        lambda: pyjwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256"),
        lambda: pyjwt.encode({"tenant": "acme"}, SECRET, algorithm="HS256"),
        lambda: pyjwt.encode(claims(exp="soon"), SECRET, algorithm="HS256"),
        lambda: pyjwt.encode(claims(exp=str(int(time.time()) + 300)), SECRET, algorithm="HS256"),
        lambda: pyjwt.encode(claims(exp=True), SECRET, algorithm="HS256"),
        lambda: pyjwt.encode(claims(nbf=str(int(time.time()))), SECRET, algorithm="HS256"),
        lambda: pyjwt.encode(claims(iat=str(int(time.time()))), SECRET, algorithm="HS256"),
        lambda: pyjwt.encode(claims(nbf=int(time.time()) + 300), SECRET, algorithm="HS256"),
        lambda: forge({"alg": "HS256", "typ": "JWT"}, ["not", "an", "object"], SECRET.encode()),
    ],
    ids=[
        "garbage",
        "garbage-segments",
        "two-segments",
        "tampered-signature",
        "other-secret",
        "other-hmac-algorithm",
        "expired",
        "no-exp",
        "non-numeric-exp",
        "exp-as-numeric-string",
        "exp-as-boolean",
        "nbf-as-numeric-string",
        "iat-as-numeric-string",
        "not-yet-valid",
        "non-object-payload",
    ],
)
def test_untrustworthy_token_is_rejected(make_token: Callable[[], str]) -> None:
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(token_scope(make_token()))


def test_default_leeway_is_small_and_documented() -> None:
    assert RESOLVER.leeway == DEFAULT_LEEWAY == 10


@pytest.mark.parametrize(
    "extra",
    [{"exp": -5}, {"nbf": 5}, {"iat": 5}],
    ids=["expired-within-leeway", "not-before-within-leeway", "issued-within-leeway"],
)
def test_clock_skew_within_the_leeway_is_tolerated(extra: dict[str, int]) -> None:
    payload = claims(**{name: int(time.time()) + offset for name, offset in extra.items()})
    token = pyjwt.encode(payload, SECRET, algorithm="HS256")
    assert RESOLVER.resolve(token_scope(token)) == Resolution("acme")


@pytest.mark.parametrize(
    "extra",
    [{"exp": -30}, {"nbf": 30}],
    ids=["expired-beyond-leeway", "not-before-beyond-leeway"],
)
def test_clock_skew_beyond_the_leeway_is_rejected(extra: dict[str, int]) -> None:
    payload = claims(**{name: int(time.time()) + offset for name, offset in extra.items()})
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(token_scope(pyjwt.encode(payload, SECRET, algorithm="HS256")))


def test_zero_leeway_rejects_a_token_that_just_expired() -> None:
    resolver = JWTResolver(SECRET, "HS256", "tenant", leeway=0)
    token = pyjwt.encode(claims(exp=int(time.time()) - 2), SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationFailed):
        resolver.resolve(token_scope(token))
    assert RESOLVER.resolve(token_scope(token)) == Resolution("acme")


def test_negative_leeway_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        JWTResolver(SECRET, "HS256", "tenant", leeway=-1)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_token_is_rejected(alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(), hmac_key=None)
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(token_scope(token))


def test_hmac_token_signed_with_the_public_key_is_rejected_when_rs256_is_configured() -> None:
    # Algorithm confusion: the public key is public, so an HS256 signature made with it as the
    # secret proves nothing.
    resolver = JWTResolver(RSA_PUBLIC_PEM, "RS256", "tenant")
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(), RSA_PUBLIC_PEM.encode())
    with pytest.raises(AuthenticationFailed):
        resolver.resolve(token_scope(token))


def test_rs256_token_is_rejected_when_hs256_is_configured() -> None:
    token = pyjwt.encode(claims(), RSA_PRIVATE, algorithm="RS256")
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(token_scope(token))


@pytest.mark.parametrize("algorithm", sorted(PRIVATE_KEYS))
def test_asymmetric_token_verifies_with_the_public_key(algorithm: str) -> None:
    private_key = PRIVATE_KEYS[algorithm]
    resolver = JWTResolver(public_pem(private_key), algorithm, "tenant")
    token = pyjwt.encode(claims(), private_key, algorithm=algorithm)
    assert resolver.resolve(token_scope(token)) == Resolution("acme")


def test_asymmetric_token_signed_by_another_key_is_rejected() -> None:
    resolver = JWTResolver(RSA_PUBLIC_PEM, "RS256", "tenant")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = pyjwt.encode(claims(), other, algorithm="RS256")
    with pytest.raises(AuthenticationFailed):
        resolver.resolve(token_scope(token))


def test_configured_audience_and_issuer_are_accepted() -> None:
    resolver = JWTResolver(SECRET, "HS256", "tenant", audience="api", issuer="https://idp")
    token = pyjwt.encode(claims(aud="api", iss="https://idp"), SECRET, algorithm="HS256")
    assert resolver.resolve(token_scope(token)) == Resolution("acme")


@pytest.mark.parametrize(
    "extra",
    [
        {"iss": "https://idp"},
        {"aud": "other", "iss": "https://idp"},
        {"aud": "api"},
        {"aud": "api", "iss": "https://evil"},
        {"aud": ["api", 7], "iss": "https://idp"},
    ],
    ids=["no-aud", "wrong-aud", "no-iss", "wrong-iss", "malformed-aud"],
)
def test_wrong_or_missing_audience_or_issuer_is_rejected(extra: dict[str, Any]) -> None:
    resolver = JWTResolver(SECRET, "HS256", "tenant", audience="api", issuer="https://idp")
    token = pyjwt.encode(claims(**extra), SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationFailed):
        resolver.resolve(token_scope(token))


def test_token_with_an_audience_is_rejected_when_none_is_configured() -> None:
    token = pyjwt.encode(claims(aud="some-other-service"), SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(token_scope(token))


@pytest.mark.parametrize(
    "tenant",
    [None, 7, ["acme"], {"id": "acme"}, True, "", "ACME", "ac_me", "a" * 64],
)
def test_missing_non_string_or_malformed_tenant_claim_is_rejected(tenant: Any) -> None:
    payload = claims(tenant=tenant) if tenant is not None else {"exp": claims()["exp"]}
    token = pyjwt.encode(payload, SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(token_scope(token))


def test_tenant_claim_name_is_configurable() -> None:
    resolver = JWTResolver(SECRET, "HS256", "org")
    token = pyjwt.encode(claims(org="globex"), SECRET, algorithm="HS256")
    assert resolver.resolve(token_scope(token)) == Resolution("globex")


@pytest.mark.parametrize("algorithm", ["none", "None", "HS1", "RS1", "hs256", ""])
def test_unsupported_algorithm_is_a_configuration_error(algorithm: str) -> None:
    with pytest.raises(ConfigurationError):
        JWTResolver(SECRET, algorithm, "tenant")


def test_empty_tenant_claim_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        JWTResolver(SECRET, "HS256", "")


def test_private_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="public key"):
        JWTResolver(private_pem(RSA_PRIVATE), "RS256", "tenant")


@pytest.mark.parametrize(
    ("secret", "algorithm"),
    [
        (SECRET, "RS256"),
        ("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n", "ES256"),
        (RSA_PUBLIC_PEM, "HS256"),
        (RSA_PUBLIC_PEM, "ES256"),
    ],
    ids=["hmac-secret-for-rs256", "garbage-pem", "public-key-as-hmac-secret", "rsa-key-for-es256"],
)
def test_key_that_does_not_fit_the_algorithm_is_a_configuration_error(
    secret: str, algorithm: str
) -> None:
    with pytest.raises(ConfigurationError):
        JWTResolver(secret, algorithm, "tenant")


@pytest.mark.parametrize(
    ("secret", "algorithm"),
    [
        ("x" * 16, "HS256"),
        (secrets.token_urlsafe(36), "HS512"),
        (public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "RS256"),
    ],
    ids=["short-hs256", "short-hs512", "rsa-1024"],
)
def test_weak_key_is_a_configuration_error(secret: str, algorithm: str) -> None:
    with pytest.raises(ConfigurationError, match="too weak"):
        JWTResolver(secret, algorithm, "tenant")


def test_missing_pyjwt_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes "import jwt" fail as if PyJWT were not installed.
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(ConfigurationError, match=r"fastapi-tenancy-kit\[jwt\]"):
        JWTResolver(SECRET, "HS256", "tenant")


def test_package_imports_without_pyjwt() -> None:
    code = "import sys; sys.modules['jwt'] = None; import fastapi_tenancy.resolution"
    subprocess.run([sys.executable, "-c", code], check=True)


@given(value=st.binary(max_size=200))
def test_any_authorization_header_resolves_to_a_valid_identifier_or_is_refused(
    value: bytes,
) -> None:
    resolve_or_refuse(RESOLVER, http_scope(headers=[("authorization", value)]))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
_CLAIM_NAMES = st.sampled_from(["tenant", "exp", "nbf", "iat", "aud", "iss", "sub", "jti"])
# Mostly acceptable claims with one or two replaced or removed, so both outcomes are exercised.
_CLAIMS = st.builds(
    lambda replaced, removed: {
        key: value
        for key, value in {**claims(aud="api", iss="https://idp"), **replaced}.items()
        if key not in removed
    },
    st.dictionaries(
        _CLAIM_NAMES | st.text(max_size=5),
        _JSON | st.from_regex(IDENTIFIER_PATTERN, fullmatch=True),
        max_size=2,
    ),
    st.sets(_CLAIM_NAMES, max_size=1),
)
_HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "none", "RS256"]) | st.just("HS256") | _JSON},
    optional={"typ": _JSON, "kid": _JSON, "crit": _JSON, "b64": _JSON},
)
STRICT_RESOLVER = JWTResolver(SECRET, "HS256", "tenant", audience="api", issuer="https://idp")


@given(header=_HEADERS, payload=_CLAIMS | _JSON)
def test_any_correctly_signed_token_resolves_to_a_valid_identifier_or_is_refused(
    header: dict[str, Any], payload: Any
) -> None:
    scope = token_scope(forge(header, payload, SECRET.encode()))
    resolve_or_refuse(RESOLVER, scope)
    resolve_or_refuse(STRICT_RESOLVER, scope)

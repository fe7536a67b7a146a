"""JWKS: keys chosen by ``kid``, fetched from a real local HTTP server, rotated without restart."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fastapi_tenancy import (
    AuthenticationFailed,
    ConfigurationError,
    ServiceUnavailable,
    Tenancy,
    TenancyConfig,
)
from fastapi_tenancy.resolution import JWTResolver, Resolution, UnknownSigningKey
from fastapi_tenancy.resolution.jwks import JWKSError, JWKSKeys, parse_jwks
from tests.resolution.test_jwt import forge, public_pem
from tests.support import apps
from tests.support.models import Base
from tests.support.scopes import http_scope

RSA_KEYS = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "abc"}
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(kid: str, private_key: Any = None, **extra: Any) -> dict[str, Any]:
    """The public JWK of an RSA (default) or EC key, as an issuer publishes it."""
    private_key = private_key if private_key is not None else RSA_KEYS[kid]
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    data: dict[str, Any] = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**data, "kid": kid, "use": "sig", **extra}


def token(kid: str | None, tenant: str = "acme", private_key: Any = None, **claims: Any) -> str:
    private_key = private_key if private_key is not None else RSA_KEYS[kid or "a"]
    algorithm = "ES256" if isinstance(private_key, ec.EllipticCurvePrivateKey) else "RS256"
    headers = {"kid": kid} if kid is not None else None
    payload = {"tenant": tenant, "exp": int(time.time()) + 300, **claims}
    return pyjwt.encode(payload, private_key, algorithm=algorithm, headers=headers)


def bearer(value: str) -> dict[str, Any]:
    return http_scope(headers=[("authorization", f"Bearer {value}")])


class JWKSServer:
    """A real HTTP server on 127.0.0.1 serving a JWK Set the test can change, counting fetches."""

    def __init__(self) -> None:
        self.document: Any = {"keys": [jwk("a")]}
        self.status = 200
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = server.document if isinstance(server.document, bytes) else None
                body = body or json.dumps(server.document).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"
        # A short poll interval keeps shutdown quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def publish(self, *kids: str) -> None:
        self.document = {"keys": [jwk(kid) for kid in kids]}

    def __enter__(self) -> JWKSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        yield server


@pytest.fixture
async def keys(jwks_server: JWKSServer) -> AsyncIterator[JWKSKeys]:
    keys = JWKSKeys(jwks_server.url, "RS256", min_refresh_interval=0)
    await keys.start()
    yield keys
    await keys.close()


# parse_jwks: which published keys are usable.


def test_usable_keys_are_indexed_by_kid() -> None:
    without_use = {name: value for name, value in jwk("c").items() if name != "use"}
    keys = parse_jwks({"keys": [jwk("a"), jwk("b", alg="RS256"), without_use]}, "RS256")
    assert set(keys) == {"a", "b", "c"}


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param({k: v for k, v in jwk("a").items() if k != "kid"}, id="no-kid"),
        pytest.param({**jwk("a"), "kid": ""}, id="empty-kid"),
        pytest.param({**jwk("a"), "kid": 7}, id="non-string-kid"),
        pytest.param(jwk("a", use="enc"), id="encryption-key"),
        pytest.param(jwk("a", alg="RS512"), id="other-algorithm"),
        pytest.param(jwk("a", private_key=EC_KEY), id="ec-key-for-rs256"),
        pytest.param(jwk("a", d="private"), id="private-material"),
        pytest.param({"kty": "oct", "kid": "a", "k": "c2VjcmV0"}, id="symmetric"),
        pytest.param({"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}, id="garbage-modulus"),
        pytest.param(
            jwk("a", private_key=rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            id="rsa-1024",
        ),
        pytest.param("not-an-object", id="not-an-object"),
    ],
)
def test_unusable_keys_are_skipped(entry: Any) -> None:
    assert parse_jwks({"keys": [entry, jwk("b")]}, "RS256").keys() == {"b"}


@pytest.mark.parametrize("document", [[], {"keys": {}}, {"no": "keys"}, "text", None])
def test_a_document_that_is_not_a_jwk_set_is_an_error(document: Any) -> None:
    with pytest.raises(JWKSError):
        parse_jwks(document, "RS256")


def test_es256_keys_are_read_from_a_jwk_set() -> None:
    keys = parse_jwks({"keys": [jwk("ec", private_key=EC_KEY), jwk("a")]}, "ES256")
    assert keys.keys() == {"ec"}
    resolver = JWTResolver(_Keys(keys), "ES256", "tenant")
    assert resolver.resolve(bearer(token("ec", private_key=EC_KEY))) == Resolution("acme")


# JWTResolver over a key set: kid chooses the key, alg stays pinned.


class _Keys:
    def __init__(self, keys: dict[str, Any]) -> None:
        self.keys = keys

    def get(self, kid: str) -> Any | None:
        return self.keys.get(kid)


PUBLISHED = parse_jwks({"keys": [jwk("a"), jwk("b")]}, "RS256")
RESOLVER = JWTResolver(_Keys(PUBLISHED), "RS256", "tenant")


@pytest.mark.parametrize("kid", ["a", "b"])
def test_kid_selects_the_verification_key(kid: str) -> None:
    assert RESOLVER.resolve(bearer(token(kid, tenant="globex"))) == Resolution("globex")


def test_token_signed_by_another_published_key_is_rejected() -> None:
    signed_by_b = pyjwt.encode(
        {"tenant": "acme", "exp": int(time.time()) + 60},
        RSA_KEYS["b"],
        algorithm="RS256",
        headers={"kid": "a"},
    )
    with pytest.raises(AuthenticationFailed) as err:
        RESOLVER.resolve(bearer(signed_by_b))
    assert not isinstance(err.value, UnknownSigningKey)


@pytest.mark.parametrize(
    "value",
    [
        token(None),
        forge({"alg": "RS256", "kid": 7}, {"tenant": "acme", "exp": 2**31}, b"x" * 32),
        "not.a.token",
        "%%%",
    ],
    ids=["no-kid", "non-string-kid", "garbage", "undecodable"],
)
def test_token_without_a_usable_kid_is_unauthorized(value: str) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        RESOLVER.resolve(bearer(value))
    assert not isinstance(err.value, UnknownSigningKey)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_claim_given_as_a_string_is_unauthorized(claim: str) -> None:
    value = str(int(time.time()) + (300 if claim == "exp" else 0))
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(bearer(token("a", **{claim: value})))


def test_unknown_kid_asks_for_a_refresh() -> None:
    with pytest.raises(UnknownSigningKey):
        RESOLVER.resolve(bearer(token("c")))


def test_public_key_as_hmac_secret_is_rejected_with_a_key_set() -> None:
    # Algorithm confusion: the attacker signs HS256 with the published key and names its kid.
    forged = forge(
        {"alg": "HS256", "kid": "a"},
        {"tenant": "acme", "exp": int(time.time()) + 60},
        public_pem(RSA_KEYS["a"]).encode(),
    )
    with pytest.raises(AuthenticationFailed):
        RESOLVER.resolve(bearer(forged))


def test_a_key_set_needs_an_asymmetric_algorithm() -> None:
    with pytest.raises(ConfigurationError):
        JWTResolver(_Keys({}), "HS256", "tenant")


# JWKSKeys against a real HTTP server.


async def test_start_fetches_the_published_keys(keys: JWKSKeys, jwks_server: JWKSServer) -> None:
    assert keys.kids == {"a"}
    assert jwks_server.fetches == 1


async def test_rotation_adds_new_keys_and_drops_withdrawn_ones(
    keys: JWKSKeys, jwks_server: JWKSServer
) -> None:
    jwks_server.publish("a", "b")
    await keys.refresh()
    assert keys.kids == {"a", "b"}
    jwks_server.publish("b")
    await keys.refresh()
    assert keys.kids == {"b"}
    assert keys.get("a") is None


async def test_unknown_key_refreshes_are_rate_limited(jwks_server: JWKSServer) -> None:
    keys = JWKSKeys(jwks_server.url, "RS256", min_refresh_interval=3600)
    await keys.start()
    try:
        assert await keys.refresh_for_unknown_key() is False
        assert jwks_server.fetches == 1
    finally:
        await keys.close()


async def test_concurrent_unknown_key_refreshes_share_one_fetch(
    keys: JWKSKeys, jwks_server: JWKSServer
) -> None:
    results = await asyncio.gather(*(keys.refresh_for_unknown_key() for _ in range(10)))
    assert all(results)
    assert jwks_server.fetches == 2  # the start, then one shared refresh


async def test_failed_refresh_keeps_the_current_keys(
    keys: JWKSKeys, jwks_server: JWKSServer
) -> None:
    jwks_server.status = 500
    assert await keys.refresh_for_unknown_key() is False
    jwks_server.status = 200
    jwks_server.document = b"<html>not json</html>"
    assert await keys.refresh_for_unknown_key() is False
    assert keys.kids == {"a"}


async def test_background_refresh_picks_up_rotation(jwks_server: JWKSServer) -> None:
    keys = JWKSKeys(jwks_server.url, "RS256", refresh_interval=0.01)
    await keys.start()
    try:
        jwks_server.publish("b")
        for _ in range(500):
            if keys.kids == {"b"}:
                break
            await asyncio.sleep(0.01)
        assert keys.kids == {"b"}
    finally:
        await keys.close()


async def test_unreachable_jwks_url_fails_startup() -> None:
    keys = JWKSKeys("http://127.0.0.1:1/jwks.json", "RS256")
    with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:1/"):
        await keys.start()


@pytest.mark.parametrize("status", [404, 500])
async def test_error_status_fails_startup(jwks_server: JWKSServer, status: int) -> None:
    jwks_server.status = status
    with pytest.raises(ServiceUnavailable, match=str(status)):
        await JWKSKeys(jwks_server.url, "RS256").start()


async def test_document_that_is_not_a_jwk_set_fails_startup(jwks_server: JWKSServer) -> None:
    jwks_server.document = {"not": "a jwk set"}
    with pytest.raises(ConfigurationError, match="JWK Set"):
        await JWKSKeys(jwks_server.url, "RS256").start()


# Configuration.


def jwks_config(url: str, **overrides: Any) -> TenancyConfig:
    settings: dict[str, Any] = {
        "resolution_strategy": "jwt",
        "jwt_algorithm": "RS256",
        "jwt_jwks_url": url,
    }
    return TenancyConfig(**(settings | overrides))


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_jwks_url_over_https_or_loopback_is_accepted(url: str) -> None:
    assert jwks_config(url).jwt_jwks_url == url


@pytest.mark.parametrize(
    "url",
    ["http://idp.example.com/jwks", "http://localhost.evil.com/jwks", "ftp://idp/jwks", "idp"],
)
def test_jwks_url_over_plain_http_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="https"):
        jwks_config(url)


def test_jwks_url_and_jwt_secret_are_mutually_exclusive() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        jwks_config("https://idp/jwks", jwt_secret=public_pem(RSA_KEYS["a"]))


@pytest.mark.parametrize("algorithm", ["HS256", "HS512"])
def test_jwks_url_needs_an_asymmetric_algorithm(algorithm: str) -> None:
    with pytest.raises(ConfigurationError, match="asymmetric"):
        jwks_config("https://idp/jwks", jwt_algorithm=algorithm)


# End to end: the middleware follows a key rotation without a restart.


@pytest.fixture
async def app(tmp_path: Path, jwks_server: JWKSServer) -> AsyncIterator[FastAPI]:
    config = jwks_config(
        jwks_server.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=Base.metadata,
        jwt_jwks_min_refresh_interval=0,
    )
    app = apps.create_app(config)
    async with LifespanManager(app):
        await app.state.tenancy.create_tenant("acme")
        yield app


async def get(app: FastAPI, value: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get("/whoami", headers={"Authorization": f"Bearer {value}"})


async def test_rotated_keys_are_followed_without_a_restart(
    app: FastAPI, jwks_server: JWKSServer
) -> None:
    assert (await get(app, token("a"))).status_code == 200
    # The issuer rotates: b is published, a is withdrawn.
    jwks_server.publish("b")
    response = await get(app, token("b"))
    assert response.status_code == 200
    assert response.json()["identifier"] == "acme"
    tenancy: Tenancy = app.state.tenancy
    assert tenancy.jwks is not None
    assert tenancy.jwks.kids == {"b"}
    stale = await get(app, token("a"))
    assert stale.status_code == 401
    assert stale.json() == {"detail": "Unauthorized"}


async def test_kid_the_issuer_never_published_is_unauthorized(
    app: FastAPI, jwks_server: JWKSServer
) -> None:
    response = await get(app, token("c"))
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert jwks_server.fetches == 2  # startup, then one refresh looking for "c"


async def test_runtime_without_jwks_has_no_key_set(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    assert Tenancy(config).jwks is None


async def test_app_does_not_start_when_the_jwks_cannot_be_fetched(tmp_path: Path) -> None:
    config = jwks_config(
        "http://127.0.0.1:1/jwks.json",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
    )
    app = apps.create_app(config)
    with pytest.raises(ServiceUnavailable, match="JWKS"):
        async with LifespanManager(app):
            pass  # pragma: no cover - startup fails

"""Every unacceptable token, through the real middleware: a generic 401, never the app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from asgi_lifespan import LifespanManager

from fastapi_tenancy import TenancyConfig
from tests.resolution.test_jwt import RSA_PRIVATE, RSA_PUBLIC_PEM, forge
from tests.support import apps
from tests.support.models import Base


def now() -> int:
    return int(time.time())


def signed(**claims: Any) -> str:
    payload = {"tenant": "acme", "exp": now() + 300, "aud": "api", "iss": "https://idp", **claims}
    return pyjwt.encode({k: v for k, v in payload.items() if v is not None}, RSA_PRIVATE, "RS256")


# Built when the test runs, not at collection: times are relative to the request.
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "alg-none": lambda: forge({"alg": "none"}, {"tenant": "acme", "exp": now() + 300}, None),
    "rs256-public-key-as-hs256-secret": lambda: forge(
        {"alg": "HS256"},
        {"tenant": "acme", "exp": now() + 300, "aud": "api", "iss": "https://idp"},
        RSA_PUBLIC_PEM.encode(),
    ),
    "expired": lambda: signed(exp=now() - 60),
    "not-yet-valid": lambda: signed(nbf=now() + 120),
    "wrong-audience": lambda: signed(aud="other"),
    "wrong-issuer": lambda: signed(iss="https://evil"),
    "missing-tenant-claim": lambda: signed(tenant=None),
    "non-string-tenant-claim": lambda: signed(tenant=["acme"]),
    "malformed-tenant-claim": lambda: signed(tenant="ACME; DROP"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=Base.metadata,
        resolution_strategy="jwt",
        jwt_algorithm="RS256",
        jwt_secret=RSA_PUBLIC_PEM,
        jwt_audience="api",
        jwt_issuer="https://idp",
    )
    app = apps.create_app(config)
    async with LifespanManager(app):
        await app.state.tenancy.create_tenant("acme")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


async def test_valid_token_reaches_the_app(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {signed()}"})
    assert response.status_code == 200
    assert response.json()["identifier"] == "acme"


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_unacceptable_token_gets_the_generic_401(
    client: httpx.AsyncClient, case: str
) -> None:
    token = BAD_TOKENS[case]()
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert response.headers["WWW-Authenticate"] == "Bearer"

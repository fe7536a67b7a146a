"""Forwarded host headers through the real middleware: honoured from trusted proxies only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tenancy import TenancyConfig
from tests.support import apps
from tests.support.models import Base

# As an operator writes it in the environment: a CIDR network, an IPv6 network, one address.
TRUSTED = "10.0.0.0/8, 2001:db8::/32, 192.0.2.7"
SPOOFED = {"X-Forwarded-Host": "globex.example.com", "Forwarded": "host=globex.example.com"}


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    monkeypatch.setenv("TENANCY_TRUSTED_PROXIES", TRUSTED)
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=Base.metadata,
        resolution_strategy="subdomain",
        domain_suffix="example.com",
    )
    app = apps.create_app(config)
    async with LifespanManager(app):
        for identifier in ("acme", "globex"):
            await app.state.tenancy.create_tenant(identifier)
        yield app


async def whoami(app: FastAPI, peer: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://acme.example.com") as c:
        return await c.get("/whoami", headers=headers)


@pytest.mark.parametrize(
    "peer",
    ["203.0.113.9", "11.0.0.1", "192.0.2.8", "2001:db9::1", "::1", "testclient"],
)
async def test_untrusted_peer_cannot_pick_a_tenant_with_forwarded_headers(
    app: FastAPI, peer: str
) -> None:
    response = await whoami(app, peer, SPOOFED)
    assert response.status_code == 200
    assert response.json()["identifier"] == "acme"


@pytest.mark.parametrize(
    "peer",
    ["10.0.0.1", "10.255.3.4", "192.0.2.7", "2001:db8::1", "2001:db8:ffff::9", "::ffff:10.1.1.1"],
)
@pytest.mark.parametrize("header", ["X-Forwarded-Host", "Forwarded"])
async def test_trusted_proxy_picks_the_tenant_with_a_forwarded_header(
    app: FastAPI, peer: str, header: str
) -> None:
    response = await whoami(app, peer, {header: SPOOFED[header]})
    assert response.status_code == 200
    assert response.json()["identifier"] == "globex"


async def test_trusted_proxy_reporting_an_unknown_host_gets_the_generic_404(app: FastAPI) -> None:
    response = await whoami(app, "10.0.0.1", {"Forwarded": "host=nobody.example.com"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Tenant not found"}

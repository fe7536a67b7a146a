"""The quickstart example behaves as the README says."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from examples.quickstart.app import create_app

from fastapi_tenancy import TenancyConfig


async def test_quickstart_serves_each_tenant_its_own_items(tmp_path: Path) -> None:
    app = create_app(TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'qs.db'}"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://qs") as client:
            acme = await client.get("/items", headers={"X-Tenant-ID": "acme"})
            assert [item["name"] for item in acme.json()] == ["anvil", "rocket skates"]
            created = await client.post(
                "/items", params={"name": "rocket"}, headers={"X-Tenant-ID": "globex"}
            )
            assert created.status_code == 201
            globex = await client.get("/items", headers={"X-Tenant-ID": "globex"})
            assert [item["name"] for item in globex.json()] == ["hammock", "rocket"]
            unknown = await client.get("/items", headers={"X-Tenant-ID": "nobody"})
            assert unknown.status_code == 404
            assert (await client.get("/health")).status_code == 200


async def test_quickstart_restarts_without_duplicating_demo_data(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'qs.db'}")
    for _ in range(2):
        app = create_app(config)
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://qs") as client:
                acme = await client.get("/items", headers={"X-Tenant-ID": "acme"})
                assert len(acme.json()) == 2

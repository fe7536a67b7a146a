"""The quickstart example behaves as the README says."""

from __future__ import annotations

from pathlib import Path

from examples.quickstart.app import create_app

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.testing import run_app


async def test_quickstart_serves_each_tenant_its_own_items(tmp_path: Path) -> None:
    app = create_app(TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'qs.db'}"))
    async with run_app(app) as harness:
        async with harness.client("acme") as acme:
            names = [item["name"] for item in (await acme.get("/items")).json()]
            assert names == ["anvil", "rocket skates"]
        async with harness.client("globex") as globex:
            created = await globex.post("/items", params={"name": "rocket"})
            assert created.status_code == 201
            names = [item["name"] for item in (await globex.get("/items")).json()]
            assert names == ["hammock", "rocket"]
        async with harness.client("nobody") as nobody:
            assert (await nobody.get("/items")).status_code == 404
        async with harness.client() as anonymous:
            assert (await anonymous.get("/health")).status_code == 200


async def test_quickstart_restarts_without_duplicating_demo_data(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'qs.db'}")
    for _ in range(2):
        async with run_app(create_app(config)) as harness, harness.client("acme") as acme:
            assert len((await acme.get("/items")).json()) == 2

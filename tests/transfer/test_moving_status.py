"""A tenant being moved answers 503 with Retry-After; every other tenant is served as before."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.exceptions import InvalidTransition
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.testing import run_app
from tests.support import apps
from tests.support.models import Base


async def test_a_moving_tenant_gets_503_with_retry_after_and_its_neighbour_is_served(
    tmp_path: Path,
) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}", tenant_metadata=Base.metadata
    )
    app = apps.create_app(config)
    async with run_app(app) as harness:
        tenancy = harness.tenancy
        await tenancy.create_tenant("acme")
        await tenancy.create_tenant("globex")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/items", headers={"X-Tenant-ID": "acme"})).status_code == 200
            moving = await tenancy.lifecycle.transition("acme", "start_move")
            assert moving.status is TenantStatus.MOVING
            frozen = await client.get("/items", headers={"X-Tenant-ID": "acme"})
            assert (frozen.status_code, frozen.headers["Retry-After"]) == (503, "5")
            assert frozen.json() == {"detail": "Service unavailable"}  # says nothing of moves
            neighbour = await client.get("/items", headers={"X-Tenant-ID": "globex"})
            assert neighbour.status_code == 200
            # Only an active tenant starts a move; finishing it serves the tenant again.
            await tenancy.suspend_tenant("globex")
            with pytest.raises(InvalidTransition):
                await tenancy.lifecycle.transition("globex", "start_move")
            await tenancy.lifecycle.transition("acme", "finish_move")
            assert (await client.get("/items", headers={"X-Tenant-ID": "acme"})).status_code == 200

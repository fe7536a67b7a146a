"""Health endpoints: liveness always, readiness only when the central database answers.

tests/faults/test_readiness.py covers readiness against real servers that fail.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from fastapi_tenancy import Tenancy, TenancyConfig, TenancyMiddleware
from fastapi_tenancy.health import health_router


async def get(config: TenancyConfig, *paths: str) -> list[httpx.Response]:
    tenancy = Tenancy(config)
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=tenancy)
    app.include_router(health_router())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
            return [await client.get(path) for path in paths]
    finally:
        await tenancy.close()


async def test_liveness_and_readiness_need_no_tenant(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    live, ready = await get(config, "/health/live", "/health/ready")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database"}  # no Redis configured, nothing else to check
    database = body["checks"]["database"]
    assert (database["status"], database["required"]) == ("ok", True)
    assert database["latency_ms"] >= 0


async def test_readiness_fails_without_revealing_why() -> None:
    config = TenancyConfig(
        database_url="postgresql+asyncpg://u:hunter2@127.0.0.1:1/x", database_pool_timeout=2
    )
    live, ready = await get(config, "/health/live", "/health/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "unavailable"
    assert "hunter2" not in ready.text
    assert "Connect" not in ready.text  # no error text, only statuses


async def test_the_health_prefix_itself_answers_liveness(tmp_path: Path) -> None:
    # Probes (the EDE chapter's, many load balancers') ask for /health alone.
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    (health,) = await get(config, "/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})

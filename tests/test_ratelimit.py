"""③ Rate limiting: per-tenant limits, real Retry-After, Redis sharing, explicit failure policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.observe import TenancyObserver
from tests.support import apps
from tests.support.models import Base
from tests.support.redis_topologies import REDIS_TOPOLOGIES


def config(tmp_path: Path, **overrides: Any) -> TenancyConfig:
    settings: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'rl.db'}",
        "tenant_metadata": Base.metadata,
        "enable_rate_limiting": True,
        "rate_limit_per_minute": 3,
    }
    return TenancyConfig(**(settings | overrides))


@asynccontextmanager
async def client_for(
    settings: TenancyConfig, tenants: dict[str, dict[str, Any]], runtime: Tenancy | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = apps.create_app(settings, tenancy=runtime)
    async with LifespanManager(app):
        tenancy: Tenancy = app.state.tenancy
        for identifier, metadata in tenants.items():
            if await tenancy.get_tenant(identifier) is None:
                await tenancy.create_tenant(identifier, metadata=metadata)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rl") as client:
            yield client


async def statuses(client: httpx.AsyncClient, identifier: str, count: int) -> list[int]:
    headers = {"X-Tenant-ID": identifier}
    return [(await client.get("/whoami", headers=headers)).status_code for _ in range(count)]


async def test_over_the_limit_answers_429_with_a_real_retry_after(tmp_path: Path) -> None:
    async with client_for(config(tmp_path), {"acme": {}, "beta": {}}) as client:
        admitted = await client.get("/whoami", headers={"X-Tenant-ID": "acme"})
        assert admitted.headers["ratelimit-limit"] == "3"
        assert admitted.headers["ratelimit-remaining"] == "2"
        assert await statuses(client, "acme", 2) == [200, 200]
        refused = await client.get("/whoami", headers={"X-Tenant-ID": "acme"})
        assert refused.status_code == 429
        assert refused.json() == {"detail": "Too many requests"}
        assert 55 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-remaining"] == "0"
        # Another tenant has a budget of its own.
        assert await statuses(client, "beta", 3) == [200, 200, 200]


async def test_tenant_metadata_and_plans_override_the_default(tmp_path: Path) -> None:
    settings = config(tmp_path, rate_limit_plans={"pro": 5})
    tenants: dict[str, dict[str, Any]] = {
        "big": {"rate_limit_per_minute": 4},
        "pro": {"plan": "pro"},
        "basic": {},
    }
    async with client_for(settings, tenants) as client:
        assert (await statuses(client, "big", 5)).count(200) == 4
        assert (await statuses(client, "pro", 6)).count(200) == 5
        assert (await statuses(client, "basic", 4)).count(200) == 3


@pytest.mark.parametrize("redis_any_url", REDIS_TOPOLOGIES, indirect=True)
async def test_redis_shares_the_limit_between_processes(tmp_path: Path, redis_any_url: str) -> None:
    settings = config(tmp_path, redis_url=redis_any_url, rate_limit_per_minute=5)
    # Two runtimes with their own memory, like two worker processes, share one Redis.
    async with client_for(settings, {"shared": {}}) as first:
        async with client_for(settings, {"shared": {}}) as second:
            results = []
            for n in range(8):
                client = first if n % 2 else second
                results += await statuses(client, "shared", 1)
    assert results.count(200) == 5
    assert results.count(429) == 3


@pytest.mark.parametrize(("fail_closed", "expected"), [(True, 503), (False, 200)])
async def test_unreachable_redis_follows_the_configured_policy(
    tmp_path: Path, fail_closed: bool, expected: int
) -> None:
    settings = config(
        tmp_path, redis_url="redis://127.0.0.1:1/0", rate_limit_fail_closed=fail_closed
    )
    tenancy = Tenancy(settings, observers=[failures := StorageFailures()])
    async with client_for(settings, {"acme": {}}, tenancy) as client:
        assert await statuses(client, "acme", 2) == [expected, expected]
    # Each failure is reported to the observers, whichever way the policy answered.
    assert failures.count == 2
    assert tenancy.limiter is not None
    with pytest.warns(DeprecationWarning, match="storage_failures"):
        assert tenancy.limiter.storage_failures == 2


class StorageFailures(TenancyObserver):
    def __init__(self) -> None:
        self.count = 0

    def rate_limit_storage_failed(self) -> None:
        self.count += 1

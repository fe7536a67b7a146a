"""Two worker processes sharing PostgreSQL and Redis behave as one app.

Each worker is a real ``uvicorn`` process with its own in-process cache and event loop; they share
only the servers, as workers on several hosts do.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.conftest import empty_database
from tests.support.http_servers import serving
from tests.support.polling import eventually
from tests.support.services import REDIS_URL, free_port, require_server

# The tests share one pair of workers (starting two processes is most of their time); each test
# uses a tenant of its own (globex is suspended, acme's limit is used up), so neither sees the
# other's changes.
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.asyncio(loop_scope="module")]

LIMIT = 7


@asynccontextmanager
async def worker(env: dict[str, str], log: Path) -> AsyncIterator[httpx.AsyncClient]:
    """One ``uvicorn`` process serving tests/scale_out/app.py, and a client for it."""
    port = free_port()
    command = [
        sys.executable,
        *("-m", "uvicorn", "tests.scale_out.app:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]
    async with (
        serving(command, port=port, env=env, ready_path="/health/ready", log=log) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workers(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    require_server("Redis", REDIS_URL, 6379)
    tmp_path = tmp_path_factory.mktemp("workers")
    async with empty_database("postgres", tmp_path) as database_url:
        prefix = f"tt-{uuid.uuid4().hex[:12]}"
        config = TenancyConfig(
            database_url=database_url,
            redis_url=SecretStr(REDIS_URL),
            cache_key_prefix=prefix,
            enable_rate_limiting=True,
            excluded_paths=("/health/*", "/admin/*"),
            # The app keeps no tables of its own (whatever models this process has imported).
            tenant_tables="none",
        )
        settings = {
            "TENANCY_DATABASE_URL": database_url,
            "TENANCY_REDIS_URL": REDIS_URL,
            "TENANCY_CACHE_KEY_PREFIX": prefix,
            "TENANCY_ENABLE_RATE_LIMITING": "true",
            "TENANCY_EXCLUDED_PATHS": "/health/*,/admin/*",
            "TENANCY_TENANT_TABLES": "none",
        }
        async with Tenancy(config) as tenancy:
            await tenancy.create_tenant("acme", metadata={"rate_limit_per_minute": LIMIT})
            await tenancy.create_tenant("globex")
        env = {**os.environ, **settings}
        async with AsyncExitStack() as stack:
            first = await stack.enter_async_context(worker(env, tmp_path / "first.log"))
            second = await stack.enter_async_context(worker(env, tmp_path / "second.log"))
            yield first, second


async def test_a_suspension_through_one_worker_reaches_the_other_by_announcement(
    workers: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    first, second = workers
    globex = {"X-Tenant-ID": "globex"}
    for client in (first, second):  # both workers now hold globex in their own memory
        assert (await client.get("/whoami", headers=globex)).status_code == 200
        assert (await client.get("/whoami", headers=globex)).status_code == 200

    suspended = await first.post("/admin/tenants/globex/suspend")
    assert suspended.json() == {"status": "suspended"}
    assert (await first.get("/whoami", headers=globex)).status_code == 403

    async def refused_by_the_other() -> bool:
        return (await second.get("/whoami", headers=globex)).status_code == 403

    # Within half the 60 s cache TTL: the announcement emptied its memory, not the expiry.
    await eventually(refused_by_the_other, within=30, what="the other worker refusing globex")
    assert (await second.get("/whoami", headers=globex)).status_code == 403


async def test_a_limit_of_n_admits_exactly_n_across_both_workers(
    workers: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme = {"X-Tenant-ID": "acme"}

    responses = await asyncio.gather(
        *(client.get("/whoami", headers=acme) for _ in range(LIMIT) for client in workers)
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * LIMIT + [429] * LIMIT
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json() == {"detail": "Too many requests"}

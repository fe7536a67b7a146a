"""Edge routing: tenant routers in Traefik's Redis layout follow the lifecycle, on real Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.domains import Domain
from fastapi_tenancy.edge import EdgeSettings, desired_keys
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import Tenant, TenantStatus
from tests.support.cli import cli_environment, run_cli
from tests.support.services import REDIS_URL, require_server

pytestmark = pytest.mark.redis


def test_a_router_per_active_tenant_matches_its_subdomain_and_domains() -> None:
    settings = EdgeSettings(
        service="app",
        root_key="traefik",
        domain_suffix="example.com",
        entrypoints=("web", "websecure"),
        cert_resolver="le",
        service_urls=("http://app:8000",),
    )
    acme = Tenant(identifier="acme")
    globex = Tenant(identifier="globex", status=TenantStatus.SUSPENDED)
    domains = [Domain("acme.com", acme.id), Domain("app.acme.com", acme.id)]

    keys = desired_keys(settings, [acme, globex], domains)

    assert keys == {
        "traefik/http/services/app/loadBalancer/servers/0/url": "http://app:8000",
        "traefik/http/routers/tenant-acme/rule": (
            "Host(`acme.example.com`) || Host(`acme.com`) || Host(`app.acme.com`)"
        ),
        "traefik/http/routers/tenant-acme/service": "app",
        "traefik/http/routers/tenant-acme/entryPoints/0": "web",
        "traefik/http/routers/tenant-acme/entryPoints/1": "websecure",
        "traefik/http/routers/tenant-acme/tls/certResolver": "le",
    }


def test_without_a_suffix_only_tenants_with_domains_get_a_router() -> None:
    settings = EdgeSettings(service="app")
    acme, globex = Tenant(identifier="acme"), Tenant(identifier="globex")
    keys = desired_keys(settings, [acme, globex], [Domain("acme.com", acme.id)])
    assert keys == {
        "traefik/http/routers/tenant-acme/rule": "Host(`acme.com`)",
        "traefik/http/routers/tenant-acme/service": "app",
    }


def test_edge_routing_needs_a_redis_and_a_consistent_service() -> None:
    with pytest.raises(ConfigurationError, match="EDGE_REDIS_URL"):
        TenancyConfig(edge_enabled=True)
    with pytest.raises(ConfigurationError, match="edge_service"):
        TenancyConfig(
            edge_enabled=True,
            redis_url=SecretStr("redis://localhost"),
            edge_service="app@docker",
            edge_service_urls="http://app:8000",
        )
    config = TenancyConfig(
        edge_enabled=True,
        edge_redis_url=SecretStr("redis://localhost/3"),
        edge_entrypoints="web,websecure",
        edge_service_urls="http://a:8000, http://b:8000",
    )
    assert config.edge_entrypoints == ("web", "websecure")
    assert config.edge_service_urls == ("http://a:8000", "http://b:8000")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    require_server("Redis", REDIS_URL, 6379)
    client: Redis = Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def root_key() -> str:
    # A root of the test's own: the test Redis db may be shared, and nothing else is touched.
    return f"tt-edge-{uuid.uuid4().hex[:10]}/traefik"


async def under(redis: Redis, root: str) -> dict[str, str]:
    keys = [key async for key in redis.scan_iter(match=f"{root}/*", count=500)]
    values = await redis.mget(keys) if keys else []
    return dict(zip(keys, values, strict=True))


async def delete_under(redis: Redis, root: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"{root}/*", count=500)]
    if keys:
        await redis.delete(*keys)


def edge_config(tmp_path: Path, root_key: str, **overrides: Any) -> TenancyConfig:
    settings: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'edge.db'}",
        "tenant_tables": "none",
        "resolution_strategy": "subdomain",
        "domain_suffix": "example.com",
        "edge_enabled": True,
        "edge_redis_url": SecretStr(REDIS_URL),
        "edge_root_key": root_key,
        "edge_service": "app",
        "edge_entrypoints": ("web",),
        "cache_key_prefix": f"tt-{uuid.uuid4().hex[:10]}",
    }
    return TenancyConfig(**(settings | overrides))


def rule(keys: dict[str, str], root: str, identifier: str) -> str | None:
    return keys.get(f"{root}/http/routers/tenant-{identifier}/rule")


async def test_routes_follow_the_lifecycle_and_domains(
    redis: Redis, root_key: str, tmp_path: Path
) -> None:
    # Keys that are not the edge's own: another router under the root, and a tenant-looking
    # router under another root.
    foreign = {
        f"{root_key}/http/routers/dashboard/rule": "Host(`admin.example.com`)",
        f"{root_key}-other/http/routers/tenant-acme/rule": "Host(`elsewhere`)",
    }
    await redis.mset(foreign)
    try:
        async with Tenancy(edge_config(tmp_path, root_key)) as tenancy:
            await tenancy.create_tenant("acme")
            keys = await under(redis, root_key)
            assert rule(keys, root_key, "acme") == "Host(`acme.example.com`)"
            assert keys[f"{root_key}/http/routers/tenant-acme/service"] == "app"
            assert keys[f"{root_key}/http/routers/tenant-acme/entryPoints/0"] == "web"

            await tenancy.add_domain("acme", "acme.com")
            keys = await under(redis, root_key)
            assert rule(keys, root_key, "acme") == "Host(`acme.example.com`) || Host(`acme.com`)"

            await tenancy.suspend_tenant("acme")
            assert rule(await under(redis, root_key), root_key, "acme") is None
            await tenancy.activate_tenant("acme")
            assert rule(await under(redis, root_key), root_key, "acme") is not None

            await tenancy.remove_domain("acme.com")
            keys = await under(redis, root_key)
            assert rule(keys, root_key, "acme") == "Host(`acme.example.com`)"

            await tenancy.create_tenant("globex", provision=False)  # pending: no route yet
            assert rule(await under(redis, root_key), root_key, "globex") is None

            # An entry point an earlier configuration listed goes with the router too.
            await redis.set(f"{root_key}/http/routers/tenant-acme/entryPoints/5", "old")
            await tenancy.delete_tenant("acme")
            keys = await under(redis, root_key)
            assert not [key for key in keys if "/tenant-acme/" in key]
            # Only the edge's own keys ever changed.
            assert keys == {f"{root_key}/http/routers/dashboard/rule": "Host(`admin.example.com`)"}
        assert (
            await redis.get(f"{root_key}-other/http/routers/tenant-acme/rule")
            == "Host(`elsewhere`)"
        )
    finally:
        await delete_under(redis, root_key)
        await delete_under(redis, f"{root_key}-other")


async def test_sync_restores_deleted_routes_and_removes_stale_ones(
    redis: Redis, root_key: str, tmp_path: Path
) -> None:
    config = edge_config(tmp_path, root_key, edge_service_urls=("http://127.0.0.1:9",))
    try:
        async with Tenancy(config) as tenancy:
            await tenancy.create_tenant("acme")
            await tenancy.create_tenant("globex")
            await tenancy.add_domain("globex", "globex.io")
            assert tenancy.edge is not None
            wanted = await under(redis, root_key)
            assert len([key for key in wanted if key.endswith("/rule")]) == 2

            # Routes lost (a flushed Redis), and a router of a tenant that no longer exists.
            await delete_under(redis, root_key)
            stale = f"{root_key}/http/routers/tenant-gone/rule"
            await redis.set(stale, "Host(`gone.example.com`)")

            plan = await tenancy.edge.sync(dry_run=True)
            assert plan.remove == [stale]
            assert dict(plan.write) == wanted
            assert await under(redis, root_key) == {stale: "Host(`gone.example.com`)"}

            plan = await tenancy.edge.sync()
            assert await under(redis, root_key) == wanted
            assert (await tenancy.edge.sync()).empty

        # A new runtime reconciles at start.
        await delete_under(redis, root_key)
        async with Tenancy(config):
            assert await under(redis, root_key) == wanted
    finally:
        await delete_under(redis, root_key)


async def test_edge_sync_on_the_command_line(redis: Redis, root_key: str, tmp_path: Path) -> None:
    env = cli_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'edge.db'}",
        tenant_tables="none",
        resolution_strategy="subdomain",
        domain_suffix="example.com",
        edge_enabled="true",
        edge_redis_url=REDIS_URL,
        edge_root_key=root_key,
    )
    try:
        assert run_cli("tenants", "create", "acme", env=env, cwd=tmp_path).returncode == 0
        await delete_under(redis, root_key)

        dry = run_cli("edge", "sync", "--dry-run", env=env, cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines() == [
            f"set {root_key}/http/routers/tenant-acme/rule Host(`acme.example.com`)",
            f"set {root_key}/http/routers/tenant-acme/service tenancy-app",
        ]
        assert await under(redis, root_key) == {}

        real = run_cli("edge", "sync", env=env, cwd=tmp_path)
        assert real.returncode == 0, real.stderr
        assert rule(await under(redis, root_key), root_key, "acme") == "Host(`acme.example.com`)"
        again = run_cli("edge", "sync", env=env, cwd=tmp_path)
        assert again.stdout == ""
        assert "wrote 0 keys and removed 0; 1 tenant routers in all" in again.stderr

        down = {**env, "TENANCY_EDGE_REDIS_URL": "redis://127.0.0.1:1/0"}
        failed = run_cli("edge", "sync", env=down, cwd=tmp_path)
        assert failed.returncode == 3, failed.stderr
        assert "edge Redis is unavailable" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert json.loads(
            run_cli("tenants", "list", "--json", env=down, cwd=tmp_path).stdout or "[]"
        )
    finally:
        await delete_under(redis, root_key)

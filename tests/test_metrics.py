"""Prometheus metrics through real requests: outcomes, resolution time, cache, engines, pools."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text
from starlette.routing import Route

from fastapi_tenancy import (
    AuthenticationFailed,
    ConfigurationError,
    InvalidTenantIdentifier,
    ServiceUnavailable,
    Tenancy,
    TenancyConfig,
    TenancyError,
    TenantNotFound,
    TenantSuspended,
)
from fastapi_tenancy.exceptions import RateLimitExceeded
from fastapi_tenancy.metrics import OTHER_TENANTS, TenancyMetrics, metrics_app, outcome_of
from fastapi_tenancy.testing import run_app
from fastapi_tenancy.types import ASGIApp
from tests.support import apps
from tests.support.backends import isolation_config
from tests.support.models import Base
from tests.support.redis_server import PrivateRedis
from tests.support.services import REDIS_URL, REQUIRE_SERVICES, require_server


def metrics_config(tmp_path: Path, **overrides: Any) -> TenancyConfig:
    settings: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        "tenant_metadata": Base.metadata,
        "enable_metrics": True,
        "excluded_paths": "/health/*,/metrics",
    }
    return TenancyConfig(**(settings | overrides))


def metrics_of(tenancy: Tenancy) -> TenancyMetrics:
    assert tenancy.metrics is not None
    return tenancy.metrics


def registry_of(tenancy: Tenancy) -> CollectorRegistry:
    registry = metrics_of(tenancy).registry
    assert registry is not None
    return registry


def value(tenancy: Tenancy, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist yet."""
    found = registry_of(tenancy).get_sample_value(name, labels)
    return 0.0 if found is None else found


def app_with_metrics(config: TenancyConfig) -> FastAPI:
    app = apps.create_app(config)
    app.routes.append(Route("/metrics", metrics_app()))
    return app


@pytest.fixture
async def harness_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = app_with_metrics(
        metrics_config(tmp_path, enable_rate_limiting=True, rate_limit_per_minute=2)
    )
    async with run_app(app) as harness:
        for identifier in ("acme", "globex", "initech", "gone"):
            await harness.tenancy.create_tenant(identifier)
        await harness.tenancy.suspend_tenant("initech")
        await harness.tenancy.delete_tenant("gone")
        yield app


def client_for(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_requests_are_counted_by_outcome(harness_app: FastAPI) -> None:
    tenancy: Tenancy = harness_app.state.tenancy
    async with client_for(harness_app) as client:
        statuses = [
            (await client.get("/whoami", headers=headers)).status_code
            for headers in (
                {"X-Tenant-ID": "acme"},
                {"X-Tenant-ID": "acme"},
                {"X-Tenant-ID": "acme"},  # over the limit of 2 per minute
                {},
                {"X-Tenant-ID": "nobody"},
                {"X-Tenant-ID": "gone"},
                {"X-Tenant-ID": "initech"},
                {"X-Tenant-ID": "globex"},
            )
        ]
        assert (await client.get("/health")).status_code == 200  # excluded: not counted
    assert statuses == [200, 200, 429, 404, 404, 404, 403, 200]
    counted = {
        outcome: value(tenancy, "fastapi_tenancy_requests_total", outcome=outcome)
        for outcome in ("accepted", "rate_limited", "not_found", "suspended", "unauthorized")
    }
    assert counted == {
        "accepted": 3,
        "rate_limited": 1,
        "not_found": 3,
        "suspended": 1,
        "unauthorized": 0,
    }
    assert value(tenancy, "fastapi_tenancy_rate_limited_requests_total") == 1
    # Resolved tenants only: the three accepted requests and the rate-limited one.
    assert value(tenancy, "fastapi_tenancy_resolution_seconds_count") == 4
    assert value(tenancy, "fastapi_tenancy_resolution_seconds_sum") > 0


async def test_bad_tokens_are_counted_as_unauthorized(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(48)
    config = metrics_config(tmp_path, resolution_strategy="jwt", jwt_secret=secret)
    async with run_app(apps.create_app(config)) as harness, client_for(harness.app) as client:
        response = await client.get("/whoami", headers={"Authorization": "Bearer not-a-jwt"})
        assert response.status_code == 401
        assert value(harness.tenancy, "fastapi_tenancy_requests_total", outcome="unauthorized") == 1


async def test_rate_limit_storage_down_is_counted_as_unavailable(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    config = metrics_config(
        tmp_path,
        enable_rate_limiting=True,
        redis_url=private_redis.url,
        cache_enabled=False,
        rate_limit_fail_closed=True,
    )
    async with run_app(apps.create_app(config)) as harness, client_for(harness.app) as client:
        await harness.tenancy.create_tenant("acme")
        assert (await client.get("/whoami", headers={"X-Tenant-ID": "acme"})).status_code == 200
        await private_redis.stop()
        assert (await client.get("/whoami", headers={"X-Tenant-ID": "acme"})).status_code == 503
        tenancy = harness.tenancy
        assert value(tenancy, "fastapi_tenancy_requests_total", outcome="unavailable") == 1
        assert value(tenancy, "fastapi_tenancy_requests_total", outcome="accepted") == 1


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TenantNotFound(), "not_found"),
        (InvalidTenantIdentifier(), "not_found"),
        (TenantSuspended(), "suspended"),
        (AuthenticationFailed(), "unauthorized"),
        (RateLimitExceeded(limit=1, retry_after=1), "rate_limited"),
        (ServiceUnavailable(), "unavailable"),
        (ConfigurationError("x"), "error"),
    ],
)
def test_every_refusal_has_an_outcome(error: TenancyError, outcome: str) -> None:
    assert outcome_of(error) == outcome


def test_other_forbidden_errors_are_counted_as_forbidden() -> None:
    class NotAMember(TenancyError):
        status_code = 403

    assert outcome_of(NotAMember()) == "forbidden"


async def test_metrics_endpoint_serves_the_exposition_without_a_tenant(
    harness_app: FastAPI,
) -> None:
    async with client_for(harness_app) as client:
        await client.get("/whoami", headers={"X-Tenant-ID": "acme"})
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'fastapi_tenancy_requests_total{outcome="accepted"} 1.0' in response.text


async def test_metrics_app_can_be_mounted_with_a_runtime_of_its_own(tmp_path: Path) -> None:
    app = FastAPI()
    async with Tenancy(metrics_config(tmp_path)) as tenancy:
        metrics_of(tenancy).request("accepted")
        app.mount("/metrics", metrics_app(tenancy))
        async with client_for(app) as client:
            response = await client.get("/metrics/")
    assert 'fastapi_tenancy_requests_total{outcome="accepted"} 1.0' in response.text


async def test_metrics_are_off_by_default_and_the_endpoint_says_so(tmp_path: Path) -> None:
    config = metrics_config(tmp_path, enable_metrics=False)
    app = app_with_metrics(config)
    async with run_app(app) as harness, client_for(harness.app) as client:
        assert harness.tenancy.metrics is None
        response = await client.get("/metrics")
    assert response.status_code == 404
    assert "TENANCY_ENABLE_METRICS" in response.text


async def test_metrics_app_needs_a_runtime() -> None:
    app = metrics_app()
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> Any:  # pragma: no cover - never reached
        raise AssertionError

    async def send(_message: Any) -> None:  # pragma: no cover - never reached
        raise AssertionError

    with pytest.raises(ConfigurationError, match="TenancyMiddleware"):
        await app(scope, receive, send)


def test_a_tenant_label_without_metrics_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TENANCY_ENABLE_METRICS"):
        TenancyConfig(metrics_tenant_label=True)


async def test_runtimes_in_one_process_keep_separate_metrics(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        Tenancy(metrics_config(tmp_path / "a")) as first,
        Tenancy(metrics_config(tmp_path / "b")) as second,
    ):
        metrics_of(first).request("accepted")
        assert value(first, "fastapi_tenancy_requests_total", outcome="accepted") == 1
        assert value(second, "fastapi_tenancy_requests_total", outcome="accepted") == 0


async def test_tenant_label_is_bounded_to_the_first_k_tenants(tmp_path: Path) -> None:
    config = metrics_config(tmp_path, metrics_tenant_label=True, metrics_tenant_label_limit=2)
    async with run_app(apps.create_app(config)) as harness, client_for(harness.app) as client:
        names = [f"t{n}" for n in range(6)]
        for name in names:
            await harness.tenancy.create_tenant(name)
        for name in names * 2:
            assert (await client.get("/whoami", headers={"X-Tenant-ID": name})).status_code == 200
        assert (await client.get("/whoami", headers={"X-Tenant-ID": "nobody"})).status_code == 404
        samples = [
            sample
            for family in registry_of(harness.tenancy).collect()
            if family.name == "fastapi_tenancy_requests"
            for sample in family.samples
            if sample.name.endswith("_total")
        ]
    by_tenant = {sample.labels["tenant"]: sample.value for sample in samples}
    # The first two tenants seen keep their label; the other four share one series; a request
    # refused before a tenant was known has none. len(by_tenant) <= limit + 2, whatever happens.
    assert by_tenant == {"t0": 2, "t1": 2, OTHER_TENANTS: 8, "": 1}


async def count_cache_lookups(
    config: TenancyConfig, *, known: int, unknown: int
) -> dict[tuple[str, str], float]:
    """Resolve a known tenant ``known`` times and an unknown one ``unknown`` times; the counts."""
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        for _ in range(known):
            async with tenancy.tenant_scope("acme"):
                pass
        for _ in range(unknown):
            with pytest.raises(TenantNotFound):
                async with tenancy.tenant_scope("nobody"):
                    pass
        return {
            (layer, result): value(
                tenancy, "fastapi_tenancy_cache_lookups_total", layer=layer, result=result
            )
            for layer in ("memory", "redis")
            for result in ("hit", "miss", "negative_hit")
        }


async def test_cache_lookups_are_counted_by_layer_and_result(tmp_path: Path) -> None:
    require_server("redis", REDIS_URL, 6379)
    config = metrics_config(
        tmp_path, redis_url=REDIS_URL, cache_key_prefix=f"t{secrets.token_hex(4)}"
    )
    counted = await count_cache_lookups(config, known=2, unknown=2)
    # First lookups miss both layers; repeats are answered by memory, negatives included.
    assert counted[("memory", "miss")] == 2
    assert counted[("memory", "hit")] == 1
    assert counted[("memory", "negative_hit")] == 1
    assert counted[("redis", "miss")] == 2


async def test_cache_lookups_are_counted_without_redis_too(tmp_path: Path) -> None:
    counted = await count_cache_lookups(metrics_config(tmp_path), known=3, unknown=2)
    assert counted[("memory", "miss")] == 2
    assert counted[("memory", "hit")] == 2
    assert counted[("memory", "negative_hit")] == 1
    assert counted[("redis", "miss")] == 0


async def test_redis_failures_are_counted_while_lookups_fall_back_to_the_store(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    config = metrics_config(tmp_path, redis_url=private_redis.url)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        await private_redis.stop()
        async with tenancy.tenant_scope("acme") as tenant:
            assert tenant.identifier == "acme"
        assert value(tenancy, "fastapi_tenancy_cache_backend_errors_total", layer="redis") >= 1


async def test_engine_cache_size_evictions_and_pool_usage_with_database_isolation(
    tmp_path: Path,
) -> None:
    config = isolation_config(
        ("database", f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"),
        enable_metrics=True,
        max_cached_engines=1,
    )
    async with Tenancy(config) as tenancy:
        for identifier in ("acme", "globex"):
            await tenancy.create_tenant(identifier)
        async with tenancy.session("acme") as session:
            await session.execute(text("SELECT 1"))
            assert (
                value(tenancy, "fastapi_tenancy_pool_connections_checked_out", pool="tenant") == 1
            )
        assert value(tenancy, "fastapi_tenancy_pool_connections_checked_out", pool="tenant") == 0
        assert value(tenancy, "fastapi_tenancy_tenant_engines") == 1
        async with tenancy.session("globex") as session:
            await session.execute(text("SELECT 1"))
        assert value(tenancy, "fastapi_tenancy_tenant_engines") == 1
        assert value(tenancy, "fastapi_tenancy_tenant_engine_evictions_total") == 1
    assert value(tenancy, "fastapi_tenancy_tenant_engines") == 0
    assert value(tenancy, "fastapi_tenancy_pool_connections_checked_out", pool="tenant") == 0


async def test_central_pool_usage_is_counted_while_a_session_holds_a_connection(
    tmp_path: Path,
) -> None:
    async with Tenancy(metrics_config(tmp_path)) as tenancy:
        await tenancy.create_tenant("acme")
        async with tenancy.session("acme") as session:
            await session.execute(text("SELECT 1"))
            assert (
                value(tenancy, "fastapi_tenancy_pool_connections_checked_out", pool="central") == 1
            )
        assert value(tenancy, "fastapi_tenancy_pool_connections_checked_out", pool="central") == 0


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        message = "promtool is not installed (Debian package 'prometheus')"
        if REQUIRE_SERVICES:
            pytest.fail(message + " and TENANCY_TEST_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    return binary


async def promtool_check(promtool: str, exposition: bytes) -> tuple[int, str]:
    """``promtool check metrics`` on ``exposition``: its exit code and what it printed."""
    process = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(exposition)
    assert process.returncode is not None
    return process.returncode, output.decode().strip()


async def test_exposition_passes_promtool_check_metrics(harness_app: FastAPI) -> None:
    promtool = _promtool()
    tenancy: Tenancy = harness_app.state.tenancy
    metrics = metrics_of(tenancy)
    # Touch every family so each appears with samples, the tenant-less ones included.
    metrics.cache_lookup("redis", "negative_hit")
    metrics.cache_backend_error("redis")
    metrics.cache_backend_up("redis", False)
    metrics.engines_cached(3)
    metrics.engine_evicted()
    metrics.slow_query(None)
    async with client_for(harness_app) as client:
        for identifier in ("acme", "acme", "acme", "nobody", "initech"):
            await client.get("/whoami", headers={"X-Tenant-ID": identifier})
        exposition = (await client.get("/metrics")).content
    assert exposition == generate_latest(registry_of(tenancy))
    returncode, output = await promtool_check(promtool, exposition)
    assert (returncode, output) == (0, "")


async def test_tenant_labelled_exposition_passes_promtool_check_metrics(tmp_path: Path) -> None:
    promtool = _promtool()
    config = metrics_config(tmp_path, metrics_tenant_label=True, metrics_tenant_label_limit=1)
    async with run_app(app_with_metrics(config)) as harness, client_for(harness.app) as client:
        for identifier in ("acme", "globex"):
            await harness.tenancy.create_tenant(identifier)
            await client.get("/whoami", headers={"X-Tenant-ID": identifier})
        metrics_of(harness.tenancy).slow_query(None)
        exposition = (await client.get("/metrics")).content
    assert b'tenant="other"' in exposition
    returncode, output = await promtool_check(promtool, exposition)
    assert (returncode, output) == (0, "")

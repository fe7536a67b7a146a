"""Metrics under gunicorn with several workers: one scrape sums every worker's counts."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.support.http_servers import serving
from tests.support.services import free_port

CONF = Path(__file__).with_name("gunicorn_conf.py")
WORKERS = 2
START_SECONDS = 60
BATCH = 10


@asynccontextmanager
async def gunicorn(tmp_path: Path, database_url: str) -> AsyncIterator[str]:
    """Serve ``tests.metrics.served_app`` with gunicorn and uvicorn workers; yield its base URL."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()  # empty on every start, as the docs tell
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "TENANCY_DATABASE_URL": database_url,
        "TENANCY_ENABLE_METRICS": "true",
        "TENANCY_EXCLUDED_PATHS": "/health/*,/metrics",
        "TENANCY_TENANT_TABLES": "none",  # the served app keeps no tables
    }
    command = [
        sys.executable,
        *("-m", "gunicorn", "--workers", str(WORKERS)),
        *("--worker-class", "uvicorn_worker.UvicornWorker", "--config", str(CONF)),
        *("--bind", f"127.0.0.1:{port}", "tests.metrics.served_app:app"),
    ]
    async with serving(
        command,
        port=port,
        env=env,
        ready_path="/health",
        log=tmp_path / "gunicorn.log",
        startup_seconds=START_SECONDS,
        stop_seconds=30,
    ) as base_url:
        yield base_url


async def test_one_scrape_sums_the_requests_of_every_gunicorn_worker(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    # No tables: run alone (or first on an xdist worker) no TenantScoped model is imported.
    config = TenancyConfig(database_url=database_url, tenant_tables="none")
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")

    async with gunicorn(tmp_path, database_url) as base_url:
        # A new connection per request, so both workers' accept loops get some.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
            pids: set[int] = set()
            sent = 0
            # gunicorn answers /health as soon as one worker is up; on a loaded machine the
            # other may boot seconds later, so batches go on until both answered, within a bound.
            deadline = asyncio.get_running_loop().time() + START_SECONDS
            while asyncio.get_running_loop().time() < deadline:
                responses = await asyncio.gather(
                    *(client.get("/pid", headers={"X-Tenant-ID": "acme"}) for _ in range(BATCH))
                )
                sent += BATCH
                assert {response.status_code for response in responses} == {200}
                pids |= {response.json()["pid"] for response in responses}
                if len(pids) == WORKERS:
                    break
            assert len(pids) == WORKERS, "every request went to one worker"
            refused = await client.get("/pid", headers={"X-Tenant-ID": "nobody"})
            assert refused.status_code == 404
            exposition = (await client.get("/metrics/")).text

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    requests = "fastapi_tenancy_requests_total"
    assert samples[(requests, (("outcome", "accepted"),))] == sent
    assert samples[(requests, (("outcome", "not_found"),))] == 1
    assert samples[("fastapi_tenancy_resolution_seconds_count", ())] == sent

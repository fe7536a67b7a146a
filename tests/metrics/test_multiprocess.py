"""Metrics under gunicorn with several workers: one scrape sums every worker's counts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
CONF = Path(__file__).with_name("gunicorn_conf.py")
WORKERS = 2
START_SECONDS = 60
BATCH = 10
MAX_BATCHES = 20


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
        "TENANCY_EXCLUDED_PATHS": "/health,/metrics",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--config",
        str(CONF),
        "--bind",
        f"127.0.0.1:{port}",
        "tests.metrics.served_app:app",
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_serving(process, base_url, tmp_path / "gunicorn.log")
        yield base_url
    except BaseException:
        # Shown with the failure: what the workers said.
        print(_read(tmp_path / "gunicorn.log"))
        raise
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def _wait_until_serving(
    process: asyncio.subprocess.Process, base_url: str, log: Path
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_SECONDS
    async with httpx.AsyncClient(base_url=base_url) as client:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"gunicorn exited:\n{_read(log)}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"gunicorn did not serve in time:\n{_read(log)}")
            await asyncio.sleep(0.2)


async def test_one_scrape_sums_the_requests_of_every_gunicorn_worker(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    async with Tenancy(TenancyConfig(database_url=database_url)) as tenancy:
        await tenancy.create_tenant("acme")

    async with gunicorn(tmp_path, database_url) as base_url:
        # A new connection per request, so both workers' accept loops get some.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
            pids: set[int] = set()
            sent = 0
            for _ in range(MAX_BATCHES):
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

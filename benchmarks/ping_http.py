"""Throughput over HTTP: ``GET /ping`` served by uvicorn, bare FastAPI against the tenancy app.

Two uvicorn processes (one worker each) serve the apps of `benchmarks.ping`; a keep-alive HTTP/1.1
client in this process drives one, then the other, in alternating rounds of equal length, and the
tenancy app's throughput is reported as a ratio of the bare app's. The tenancy app resolves the
tenant from the ``X-Tenant-ID`` header on an SQLite store, warm after the first request per tenant.

    python -m benchmarks.ping_http --seconds 5 --rounds 5 --connections 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from fastapi import FastAPI

from benchmarks import common
from benchmarks.ping import MIN_RATIO, TENANTS, ping_app
from fastapi_tenancy import Tenancy, TenancyConfig, TenancyMiddleware

REPOSITORY = common.REPOSITORY


def bare() -> FastAPI:
    """uvicorn factory: the bare app."""
    return ping_app()


def with_tenancy() -> FastAPI:
    """uvicorn factory: the same app with the middleware, configured by ``TENANCY_*``."""
    app = ping_app()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig())
    return app


def serve(factory: str, env: dict[str, str]) -> AbstractAsyncContextManager[int]:
    """Run ``uvicorn benchmarks.ping_http:<factory>`` until the block ends; yields its port."""
    return common.serve(f"benchmarks.ping_http:{factory}", env, wait_seconds=30)


async def load(port: int, seconds: float, connections: int) -> float:
    """Requests per second over ``connections`` keep-alive connections for ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done = 0

    async def client(n: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            f"GET /ping HTTP/1.1\r\nHost: bench\r\nX-Tenant-ID: tenant-{n % TENANTS}\r\n\r\n"
        ).encode()
        try:
            while loop.time() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"/ping answered {head.split(b' ', 2)[1].decode()}")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    started = loop.time()
    await asyncio.gather(*(client(n) for n in range(connections)))
    return done / (loop.time() - started)


async def run(seconds: float, rounds: int, connections: int) -> bool:
    directory = Path(tempfile.mkdtemp(prefix="tenancy-ping-http-"))
    database = f"sqlite+aiosqlite:///{directory / 'tenants.db'}"
    # /ping reads no table, so the tenants get none.
    async with Tenancy(TenancyConfig(database_url=database, tenant_tables="none")) as tenancy:
        for n in range(TENANTS):
            await tenancy.create_tenant(f"tenant-{n}")
    env = {
        **os.environ,
        "TENANCY_DATABASE_URL": database,
        "TENANCY_TENANT_TABLES": "none",
        "PYTHONPATH": str(REPOSITORY),
    }
    rates: dict[str, list[float]] = {"bare FastAPI": [], "tenancy (header, warm cache)": []}
    async with serve("bare", env) as bare_port, serve("with_tenancy", env) as tenancy_port:
        ports = dict(zip(rates, (bare_port, tenancy_port), strict=True))
        for port in ports.values():
            await load(port, 1.0, connections)  # warm: tenants cached, code paths hot
        for _ in range(rounds):
            for name, port in ports.items():
                rates[name].append(await load(port, seconds, connections))
    base = statistics.median(rates["bare FastAPI"])
    print(f"{'app (uvicorn, HTTP/1.1 keep-alive)':<36}{'req/s':>9}{'x bare':>9}")
    for name, measured in rates.items():
        rate = statistics.median(measured)
        print(f"{name:<36}{rate:>9.0f}{rate / base:>9.2f}")
    ratio = statistics.median(rates["tenancy (header, warm cache)"]) / base
    met = ratio >= MIN_RATIO
    verdict = "met" if met else "NOT met"
    print(f"\ntarget: throughput >= {MIN_RATIO} x bare (got {ratio:.2f}): {verdict}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each round per app")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    raise SystemExit(0 if asyncio.run(run(args.seconds, args.rounds, args.connections)) else 1)


if __name__ == "__main__":
    main()

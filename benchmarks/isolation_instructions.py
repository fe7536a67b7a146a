"""Isolation overhead in CPU instructions per request: a count a loaded machine does not disturb.

Throughput on a shared machine swings by a third between runs; the instructions the benchmark
process executes per request do not. This runs the apps of `benchmarks.isolation` (the bare app
and the chosen variants, ``GET /items``, one SELECT) one after another in one process under
valgrind's callgrind, counting only while each app serves its measured requests (callgrind's
instrumentation is switched on and off around them with ``callgrind_control``), one request at a
time so that the event loop does the same work for every request::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=callgrind.out \\
        python -m benchmarks.isolation_instructions --variants row,search_path --requests 200

The count covers the whole process: the HTTP client, the app, SQLAlchemy and the driver, the
same client work for every app. Under callgrind the run is about 50 times slower than normal.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import subprocess

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import insert

from benchmarks import isolation as bench
from benchmarks.common import add_url_argument, ensure_database
from fastapi_tenancy import Tenancy


def callgrind(*command: str) -> None:
    subprocess.run(
        ["callgrind_control", *command, str(os.getpid())], check=True, capture_output=True
    )


def instructions(out_file: str, part: str) -> int:
    """The instructions counted in the dump triggered as ``part``."""
    for path in glob.glob(f"{out_file}.*"):
        with open(path, encoding="utf-8") as dump:
            text = dump.read()
        if f"desc: Trigger: dump {part}\n" in text:
            return int(text.split("\ntotals: ", 1)[1].split()[0])
    raise RuntimeError(f"no callgrind dump for {part} next to {out_file}")


async def run(url: str, variants: list[str], requests: int, out_file: str) -> None:
    strategies = {bench.VARIANTS[key][1] for key in variants} | {"row"}
    centrals = {strategy: bench.central_url(url, strategy) for strategy in sorted(strategies)}
    for strategy, central in centrals.items():
        await ensure_database(central)
        await bench.reset(central, strategy)
    bare, engine = bench.bare_app(url)
    async with engine.begin() as conn:
        await conn.run_sync(bench.Base.metadata.create_all)
        await conn.execute(
            insert(bench.Item),
            [{"name": f"x-{k}", "tenant_id": "x"} for k in range(bench.ROWS_PER_TENANT)],
        )
    apps = [("bare", bare, ["x"])]
    runtimes: list[Tenancy] = []
    seeded: dict[str, list[str]] = {}
    for key in variants:
        _label, strategy, binding, rls, _reset = bench.VARIANTS[key]
        app_url = await bench.rls_app_url(url) if rls else url
        tenancy = Tenancy(
            bench.config(bench.central_url(app_url, strategy), strategy, binding, rls)
        )
        await tenancy.start()
        runtimes.append(tenancy)
        if strategy not in seeded:
            seeded[strategy] = await bench.seed(tenancy, 10, prefix=strategy[0])
        apps.append((key, bench.tenancy_app(tenancy), seeded[strategy]))
    counts: dict[str, int] = {}
    for name, app, identifiers in apps:
        async with LifespanManager(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def one(n: int, identifiers: list[str] = identifiers) -> None:
                    headers = {"X-Tenant-ID": identifiers[n % len(identifiers)]}
                    response = await client.get("/items", headers=headers)
                    assert len(response.json()) == bench.ROWS_PER_TENANT

                for n in range(200):  # warm: pool filled, statements prepared and cached
                    await one(n)
                callgrind("-i", "on")
                for n in range(requests):
                    await one(n)
                callgrind("-i", "off")
                callgrind("-d", name)
        counts[name] = instructions(out_file, name) // requests
    print(f"{'app':<24}{'instructions/req':>18}{'x bare':>9}")
    for name, count in counts.items():
        print(f"{name:<24}{count:>18,}{counts['bare'] / count:>9.2f}")
    for tenancy in runtimes:
        await tenancy.close()
    await engine.dispose()
    for strategy, central in centrals.items():
        await bench.reset(central, strategy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--variants", default="row,search_path")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--callgrind-out-file",
        default="callgrind.out",
        help="the --callgrind-out-file given to valgrind (its dumps are read back)",
    )
    args = parser.parse_args()
    keys = [key.strip() for key in args.variants.split(",") if key.strip()]
    asyncio.run(run(args.url, keys, args.requests, args.callgrind_out_file))


if __name__ == "__main__":
    main()

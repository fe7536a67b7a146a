"""No-op fleet migrations at 10,000 tenants without an hour of first migration.

    python -m benchmarks.noop_migrations --tenants 10000 --runs 3 --prefix h2_ops_ \\
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/h2_bench10k

Builds the fleet `benchmarks.operations` builds (schema isolation, Alembic owns the tables,
``create_tenant`` for each tenant), but leaves each tenant as its first ``migrate upgrade`` would
(the revision's table and a stamped ``alembic_version``, written with plain SQL), which takes
minutes instead of the better part of an hour. Then it runs ``--runs`` no-op ``upgrade`` calls in
this process and prints each: the first run in a process meets server connections with cold
catalog caches, as ``fastapi-tenancy migrate upgrade`` always does. A fleet of the right size
left by an earlier run (``--keep``) is reused; ``--drop`` only removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks.common import add_url_argument, drop_schemas, ensure_database
from benchmarks.operations import script_directory
from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.migrations import upgrade

REVISION = "ops000000001"  # benchmarks.operations' one revision
# Schemas stamped per transaction: each takes a few locks, well inside the server's lock table.
STAMP_BATCH = 50


def fleet_config(url: str, prefix: str) -> TenancyConfig:
    return TenancyConfig(
        database_url=url,
        isolation_strategy="schema",
        schema_prefix=prefix,
        tenant_metadata=MetaData(),  # Alembic owns the tables
        tenant_tables="none",
    )


async def drop(url: str, prefix: str) -> None:
    """The fleet's schemas, and the central tables with their version table."""
    await drop_schemas(url, prefix)
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "DROP TABLE IF EXISTS tenancy_tenants, tenancy_audit, tenancy_domains, "
                "tenancy_alembic_version CASCADE"
            )
        )
    await engine.dispose()


async def existing_fleet(url: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(text("SELECT to_regclass('tenancy_tenants') IS NOT NULL"))
            if not found:
                return 0
            return int(await conn.scalar(text("SELECT count(*) FROM tenancy_tenants")) or 0)
    finally:
        await engine.dispose()


async def build(url: str, prefix: str, tenants: int) -> None:
    await drop(url, prefix)
    async with Tenancy(fleet_config(url, prefix)) as tenancy:
        gate = asyncio.Semaphore(5)

        async def create(n: int) -> None:
            async with gate:
                await tenancy.create_tenant(f"ops{n:05d}")

        started = time.perf_counter()
        await asyncio.gather(*(create(n) for n in range(tenants)))
        print(f"created {tenants} tenants in {time.perf_counter() - started:.1f}s", flush=True)
        schemas = [t.storage_name for t in await tenancy.list_tenants() if t.storage_name]
    started = time.perf_counter()
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        for start in range(0, len(schemas), STAMP_BATCH):
            async with engine.begin() as conn:
                for schema in schemas[start : start + STAMP_BATCH]:
                    await stamp(conn, schema)
    finally:
        await engine.dispose()
    print(f"stamped {len(schemas)} at {REVISION} in {time.perf_counter() - started:.1f}s")


async def stamp(conn: AsyncConnection, schema: str) -> None:
    """What the first migration leaves in ``schema``: the revision's table, the version row."""
    for statement in (
        f'CREATE TABLE "{schema}".ops_items (id SERIAL PRIMARY KEY, '
        "tenant_id VARCHAR(64) NOT NULL)",
        f'CREATE INDEX ON "{schema}".ops_items (tenant_id)',
        f'CREATE TABLE "{schema}".alembic_version (version_num VARCHAR(32) NOT NULL, '
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        f"INSERT INTO \"{schema}\".alembic_version VALUES ('{REVISION}')",
    ):
        await conn.execute(text(statement))


async def runs(url: str, prefix: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        alembic_config = script_directory(Path(folder) / "migrations")
        async with Tenancy(fleet_config(url, prefix)) as tenancy:
            print(f"{'run':<5}{'tenants':>8}{'no-op upgrade':>15}{'per tenant':>12}{'load':>6}")
            for run in range(1, count + 1):
                load = os.getloadavg()[0]
                report = await upgrade(tenancy, alembic_config)
                tenants = len(report.migrations)
                assert report.skipped == tenants, "every tenant is at head"
                print(
                    f"{run:<5}{tenants:>8}{report.seconds:>14.2f}s"
                    f"{report.seconds / tenants * 1000:>10.3f}ms{load:>6.1f}",
                    flush=True,
                )


async def main(args: argparse.Namespace) -> None:
    await ensure_database(args.url)
    if args.drop:
        await drop(args.url, args.prefix)
        return
    if await existing_fleet(args.url) != args.tenants:
        await build(args.url, args.prefix, args.tenants)
    await runs(args.url, args.prefix, args.runs)
    if not args.keep:
        await drop(args.url, args.prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--tenants", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3, help="no-op upgrades in this process")
    parser.add_argument("--prefix", default="noop_", help="schema name prefix")
    parser.add_argument("--keep", action="store_true", help="keep the fleet for the next run")
    parser.add_argument("--drop", action="store_true", help="only drop a kept fleet")
    arguments = parser.parse_args()
    make_url(arguments.url)  # fail early on a malformed URL
    asyncio.run(main(arguments))

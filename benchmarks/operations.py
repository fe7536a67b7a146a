"""Operations at scale: provision N schema tenants, then migrate them, then re-run as a no-op.

    python benchmarks/operations.py --tenants 1000

Uses PostgreSQL schema isolation and a real Alembic script directory (one revision creating a
table). Reports wall time for: creating and provisioning the tenants (``create_tenant``, a few at
a time), the first ``migrate upgrade`` over all of them, and the second one, which finds every
tenant at head and must finish in under 10 s for 1000 tenants.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks.common import add_url_argument, drop_schemas, ensure_database
from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.migrations import upgrade

ENV_PY = "from fastapi_tenancy.migrations import run_migrations\n\nrun_migrations()\n"
REVISION_PY = """\
import sqlalchemy as sa
from alembic import op

revision = "ops000000001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ops_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    )
"""


def script_directory(folder: Path) -> Config:
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY, encoding="utf-8")
    (folder / "versions" / "ops000000001_items.py").write_text(REVISION_PY, encoding="utf-8")
    config = Config()
    config.set_main_option("script_location", str(folder))
    return config


async def reset(url: str) -> None:
    await drop_schemas(url, "ops_")
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS tenancy_tenants, tenancy_audit"))
    await engine.dispose()


async def run(url: str, tenants: int, concurrency: int) -> None:
    await ensure_database(url)
    await reset(url)
    config = TenancyConfig(
        database_url=url,
        isolation_strategy="schema",
        schema_prefix="ops_",
        tenant_metadata=MetaData(),  # Alembic owns the tables
        database_pool_size=concurrency,
    )
    with tempfile.TemporaryDirectory() as folder:
        alembic_config = script_directory(Path(folder) / "migrations")
        async with Tenancy(config) as tenancy:
            gate = asyncio.Semaphore(concurrency)

            async def create(n: int) -> None:
                async with gate:
                    await tenancy.create_tenant(f"ops{n:05d}")

            started = time.perf_counter()
            await asyncio.gather(*(create(n) for n in range(tenants)))
            provisioned = time.perf_counter() - started
            first = await upgrade(tenancy, alembic_config, concurrency=concurrency)
            again = await upgrade(tenancy, alembic_config, concurrency=concurrency)
    print(f"{'step':<34}{'tenants':>8}{'seconds':>10}{'per tenant':>12}")
    rows = [
        ("provision (create_tenant)", tenants, provisioned),
        (f"migrate upgrade, first ({first.upgraded} up)", tenants, first.seconds),
        (f"migrate upgrade, no-op ({again.skipped} skip)", tenants, again.seconds),
    ]
    for label, count, seconds in rows:
        print(f"{label:<34}{count:>8}{seconds:>10.2f}{seconds / count * 1000:>10.1f}ms")
    assert first.failed == again.failed == 0
    print(f"no-op re-run under 10 s: {'yes' if again.seconds < 10 else 'NO'}")
    await reset(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    make_url(args.url)  # fail early on a malformed URL
    asyncio.run(run(args.url, args.tenants, args.concurrency))


if __name__ == "__main__":
    main()

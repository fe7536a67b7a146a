"""Provisioning a tenant at the Alembic head: from the template against empty-then-migrated.

    python -m benchmarks.alembic_provisioning --rounds 5 --per-round 4 --prefix h3_alp_

PostgreSQL, a 5-table Alembic history (five revisions: foreign keys, indexes, an enum, server
defaults, seeded rows). For schema and database isolation, in alternating rounds in one run:

* template: ``create_tenant`` with ``alembic_config`` set (a copy of the template at head; the
  template is built before the first round and not counted);
* migrated: ``create_tenant`` with ``tenant_tables="none"`` (an empty schema or database), then
  ``upgrade(..., identifiers=[that tenant])``: what a new tenant cost before.

Prints the median per tenant of each and their ratio. Everything made under ``--prefix`` (schemas,
tenant databases, templates, central tables) is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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

TABLES = [
    """op.create_table("customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="t"),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("kind", sa.Enum("retail", "wholesale", name="customer_kind")),
        sa.UniqueConstraint("tenant_id", "email"))
    op.create_index("ix_customers_tenant", "customers", ["tenant_id"])""",
    """op.create_table("products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="t"),
        sa.Column("sku", sa.String(40), nullable=False, unique=True),
        sa.Column("price", sa.Numeric(12, 2), nullable=False, server_default="0"))
    op.execute("INSERT INTO products (sku, price) VALUES ('starter', 0), ('basic', 10)")""",
    """op.create_table("orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="t"),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()))
    op.create_index("ix_orders_customer", "orders", ["customer_id"])""",
    """op.create_table("order_lines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="t"),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE")),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id")),
        sa.Column("quantity", sa.Integer, nullable=False, server_default="1"))""",
    """op.create_table("settings",
        sa.Column("key", sa.String(60), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, server_default="t"),
        sa.Column("value", sa.String(200)))
    op.execute("INSERT INTO settings (key, value) VALUES ('currency', 'EUR')")""",
]


def write_history(folder: Path) -> str:
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY, encoding="utf-8")
    down = "None"
    for number, body in enumerate(TABLES, start=1):
        revision = f"alp{number:09d}"
        (folder / "versions" / f"{revision}.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n"
            f'revision = "{revision}"\ndown_revision = {down}\n'
            "branch_labels = None\ndepends_on = None\n\n"
            f"def upgrade() -> None:\n    {body}\n\ndef downgrade() -> None:\n    pass\n",
            encoding="utf-8",
        )
        down = f'"{revision}"'
    ini = folder / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {folder}\n", encoding="utf-8")
    return str(ini)


async def measure(
    url: str, strategy: str, prefix: str, ini: str, rounds: int, per_round: int
) -> tuple[float, float]:
    common: dict[str, object] = {
        "database_url": url,
        "isolation_strategy": strategy,
        "schema_prefix": prefix,
        "tenant_metadata": MetaData(),
    }
    if strategy == "database":
        rendered = make_url(url).set(database="DB").render_as_string(hide_password=False)
        common["database_url_template"] = rendered.replace("/DB", "/{database}")
    templated = TenancyConfig(**common, alembic_config=ini)  # type: ignore[arg-type]
    plain = TenancyConfig(**common, tenant_tables="none")  # type: ignore[arg-type]
    script = Config(ini)
    fast: list[float] = []
    slow: list[float] = []
    async with Tenancy(templated) as with_template, Tenancy(plain) as without:
        await with_template.create_tenant(f"{strategy}-warm")  # builds the template
        count = 0
        for _ in range(rounds):
            for _ in range(per_round):
                count += 1
                started = time.perf_counter()
                await with_template.create_tenant(f"{strategy}-t{count}")
                fast.append(time.perf_counter() - started)
            for _ in range(per_round):
                count += 1
                started = time.perf_counter()
                tenant = await without.create_tenant(f"{strategy}-m{count}")
                report = await upgrade(without, script, identifiers=[tenant.identifier])
                assert report.ok, report
                slow.append(time.perf_counter() - started)
    return statistics.median(fast), statistics.median(slow)


async def cleanup(url: str, prefix: str) -> None:
    await drop_schemas(url, prefix)
    admin = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        names = await conn.scalars(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": prefix.replace("_", "\\_") + "%"},
        )
        for name in names.all():
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        for table in ("tenancy_audit", "tenancy_domains", "tenancy_tenants"):
            await conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        await conn.execute(text("DROP TABLE IF EXISTS tenancy_alembic_version"))
    await engine.dispose()


async def run(args: argparse.Namespace) -> None:
    await ensure_database(args.url)
    await cleanup(args.url, args.prefix)
    with tempfile.TemporaryDirectory() as folder:
        ini = write_history(Path(folder) / "alembic")
        try:
            for strategy in ("schema", "database"):
                fast, slow = await measure(
                    args.url, strategy, args.prefix, ini, args.rounds, args.per_round
                )
                print(
                    f"{strategy:8} from template {fast * 1000:7.1f} ms/tenant   "
                    f"empty + migrate upgrade {slow * 1000:7.1f} ms/tenant   "
                    f"ratio {slow / fast:5.1f}x faster"
                )
        finally:
            await cleanup(args.url, args.prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--prefix", default="alp_", help="storage name prefix (dropped at end)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Operations at scale: provisioning against hand-written SQL, and fleet migrations.

    python -m benchmarks.operations --tenants 1000
    python -m benchmarks.operations --tenants 10000 --prefix h7_ops_ --provision 200

Uses PostgreSQL schema isolation. Two parts, in one run:

* provisioning: ``--provision`` tenants with a 5-table app schema (foreign keys, indexes, a
  unique constraint) created with ``create_tenant``, one at a time, against the same schemas
  made by hand-written SQL (``CREATE SCHEMA``, the tables and a tenant row in one transaction,
  statement by statement) and by the same SQL sent as one message (the floor for this DDL), in
  alternating rounds; the ratios, and the round trips and commits of one tenant, are printed;
* migrations, with a real Alembic script directory (one revision creating a table): ``--tenants``
  tenants created empty (Alembic owns the tables), the first ``migrate upgrade`` over all of them,
  and a second one, which finds every tenant at head (target: under 10 s for 10,000 tenants).

Schemas are named with ``--prefix`` and dropped at the end (one transaction per schema).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
    event,
    func,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, Pool

from benchmarks.common import add_url_argument, drop_schemas, ensure_database
from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.migrations import upgrade
from fastapi_tenancy.pgwire import POSTGRES_SESSION_RESET

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


APP = MetaData()
Table(
    "customers",
    APP,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("email", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    UniqueConstraint("tenant_id", "email"),
)
Table(
    "products",
    APP,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("sku", String(64), nullable=False),
    Column("price", Numeric(12, 2), nullable=False),
)
Table(
    "orders",
    APP,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("customer_id", Integer, ForeignKey("customers.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
Table(
    "order_lines",
    APP,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("product_id", Integer, ForeignKey("products.id"), nullable=False),
    Column("quantity", Integer, nullable=False),
    Index("ix_order_lines_order_product", "order_id", "product_id"),
)
Table(
    "notes",
    APP,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=True),
    Column("body", String(2000), nullable=False),
)

# What a developer writes by hand for the same tables, sent statement by statement in one
# transaction, as an app without a tenancy library provisions a tenant.
HAND_WRITTEN = """\
CREATE SCHEMA "{s}";
CREATE TABLE "{s}".customers (id SERIAL PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL,
  email VARCHAR(200) NOT NULL, name VARCHAR(200) NOT NULL, UNIQUE (tenant_id, email));
CREATE INDEX ON "{s}".customers (tenant_id);
CREATE TABLE "{s}".products (id SERIAL PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL,
  sku VARCHAR(64) NOT NULL, price NUMERIC(12, 2) NOT NULL);
CREATE INDEX ON "{s}".products (tenant_id);
CREATE TABLE "{s}".orders (id SERIAL PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL,
  customer_id INTEGER NOT NULL REFERENCES "{s}".customers (id),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE INDEX ON "{s}".orders (tenant_id);
CREATE TABLE "{s}".order_lines (id SERIAL PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL,
  order_id INTEGER NOT NULL REFERENCES "{s}".orders (id),
  product_id INTEGER NOT NULL REFERENCES "{s}".products (id), quantity INTEGER NOT NULL);
CREATE INDEX ON "{s}".order_lines (tenant_id);
CREATE INDEX ON "{s}".order_lines (order_id, product_id);
CREATE TABLE "{s}".notes (id SERIAL PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL,
  order_id INTEGER REFERENCES "{s}".orders (id), body VARCHAR(2000) NOT NULL);
CREATE INDEX ON "{s}".notes (tenant_id);
INSERT INTO {prefix}hand_tenants (identifier, schema_name) VALUES ('{s}', '{s}')"""


async def reset(url: str, prefix: str) -> None:
    await drop_schemas(url, prefix)
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE IF EXISTS {prefix}hand_tenants"))
        # The central tables with their version table: dropping the tables alone would leave
        # the version at head, and the next run's start-up would not create them again.
        await conn.execute(
            text(
                "DROP TABLE IF EXISTS tenancy_domains, tenancy_tenants, tenancy_audit, "
                "tenancy_alembic_version CASCADE"
            )
        )
    await engine.dispose()


async def provisioning(url: str, prefix: str, tenants: int, rounds: int = 5) -> list[str]:
    """Per-tenant milliseconds of ``create_tenant`` and of hand-written SQL, alternating."""
    config = TenancyConfig(
        database_url=url,
        isolation_strategy="schema",
        schema_prefix=f"{prefix}lib_",
        tenant_metadata=APP,
        database_pool_size=2,
    )
    engine = create_async_engine(url, pool_size=2)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {prefix}hand_tenants (id SERIAL PRIMARY KEY, "
                "identifier VARCHAR(255) UNIQUE NOT NULL, schema_name VARCHAR(63) NOT NULL)"
            )
        )
    ours: list[float] = []
    hand: list[float] = []
    script: list[float] = []
    per_round = max(1, tenants // rounds)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("warmup")
        async with count_round_trips() as ours_trips:
            await tenancy.create_tenant("counted")
        async with count_round_trips() as hand_trips:
            await hand_written(engine, prefix, f"{prefix}hand_counted")
        sides: list[tuple[list[float], Callable[[str], Awaitable[Any]]]] = [
            (ours, lambda name: tenancy.create_tenant(name.replace("_", "-"))),
            (hand, lambda name: hand_written(engine, prefix, f"{prefix}hand_{name}")),
            (script, lambda name: hand_written_script(engine, prefix, f"{prefix}script_{name}")),
        ]
        for round_ in range(rounds):
            # Each round starts with another side: none is always measured first or last.
            for times, create in sides[round_ % 3 :] + sides[: round_ % 3]:
                started = time.perf_counter()
                for n in range(per_round):
                    await create(f"p{round_}_{n}")
                times.append((time.perf_counter() - started) / per_round)
    await engine.dispose()
    ours_ms, hand_ms = statistics.median(ours) * 1000, statistics.median(hand) * 1000
    script_ms = statistics.median(script) * 1000
    return [
        f"provisioning, 5-table schema, {per_round * rounds} tenants one at a time "
        f"(median of {rounds} alternating rounds):",
        f"  create_tenant      {ours_ms:7.1f} ms per tenant",
        f"  hand-written SQL   {hand_ms:7.1f} ms per tenant (statement by statement)",
        f"  ... one message    {script_ms:7.1f} ms per tenant (the same SQL as one script: "
        f"{ours_ms / script_ms:.2f}x)",
        f"  ratio              {ours_ms / hand_ms:7.2f}x hand-written (target: <= 1.00, < 20 ms)",
        f"  round trips        {ours_trips.round_trips} create_tenant, "
        f"{hand_trips.round_trips} hand-written (session resets included)",
        f"  commits            {ours_trips.commits} create_tenant, "
        f"{hand_trips.commits} hand-written",
    ]


async def database_provisioning(url: str, prefix: str, tenants: int, rounds: int = 5) -> list[str]:
    """Database isolation: ``create_tenant`` against a hand-written ``CREATE DATABASE … TEMPLATE``.

    The hand-written side copies the same template database the library built (the 5 tables)
    on an open AUTOCOMMIT connection and inserts a tenant row, as an app with a template of its
    own would; the bare copy alone is printed too, the floor.
    """
    parsed = make_url(url)
    pattern = parsed.set(database="DATABASE").render_as_string(hide_password=False)
    config = TenancyConfig(
        database_url=url,
        isolation_strategy="database",
        database_url_template=pattern.replace("DATABASE", "{database}"),
        schema_prefix=f"{prefix}db_",
        tenant_metadata=APP,
        database_pool_size=2,
    )
    engine = create_async_engine(url, pool_size=2)
    admin = create_async_engine(
        parsed.set(database="postgres"), pool_size=1, isolation_level="AUTOCOMMIT"
    )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {prefix}hand_tenants (id SERIAL PRIMARY KEY, "
                "identifier VARCHAR(255) UNIQUE NOT NULL, schema_name VARCHAR(63) NOT NULL)"
            )
        )
    ours: list[float] = []
    hand: list[float] = []
    bare: list[float] = []
    per_round = max(1, tenants // rounds)
    async with Tenancy(config) as tenancy, admin.connect() as kept:
        await tenancy.create_tenant("warmup")  # builds the template
        template = await kept.scalar(
            text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"),
            {"p": f"{prefix}db_tpl_"},
        )

        async def copy(name: str) -> None:
            await kept.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

        async def by_hand(name: str) -> None:
            await copy(name)
            async with engine.begin() as conn:
                insert = (
                    f"INSERT INTO {prefix}hand_tenants (identifier, schema_name) VALUES (:n, :n)"
                )
                await conn.execute(text(insert), {"n": name})

        async with count_round_trips() as ours_trips:
            await tenancy.create_tenant("counted")
        for round_ in range(rounds):
            started = time.perf_counter()
            for n in range(per_round):
                await tenancy.create_tenant(f"p{round_}-{n}")
            ours.append((time.perf_counter() - started) / per_round)
            started = time.perf_counter()
            for n in range(per_round):
                await by_hand(f"{prefix}hand_{round_}_{n}")
            hand.append((time.perf_counter() - started) / per_round)
            started = time.perf_counter()
            for n in range(per_round):
                await copy(f"{prefix}bare_{round_}_{n}")
            bare.append((time.perf_counter() - started) / per_round)
    await engine.dispose()
    await admin.dispose()
    ours_ms, hand_ms = statistics.median(ours) * 1000, statistics.median(hand) * 1000
    bare_ms = statistics.median(bare) * 1000
    return [
        f"provisioning, database isolation, {per_round * rounds} tenants one at a time "
        f"(median of {rounds} alternating rounds):",
        f"  create_tenant      {ours_ms:7.1f} ms per tenant",
        f"  hand-written SQL   {hand_ms:7.1f} ms per tenant (CREATE DATABASE … TEMPLATE, a row)",
        f"  ... bare copy      {bare_ms:7.1f} ms per tenant (CREATE DATABASE … TEMPLATE alone)",
        f"  ratio              {ours_ms / hand_ms:7.2f}x hand-written (target: <= 1.00)",
        f"  round trips        {ours_trips.round_trips} create_tenant (connections: "
        f"{ours_trips.connections}), commits {ours_trips.commits}",
    ]


async def drop_databases(url: str, prefix: str) -> None:
    """Drop every database whose name starts with ``prefix`` (this run's, on this server)."""
    admin = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        names = await conn.execute(
            text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"), {"p": prefix}
        )
        for (name,) in names.all():
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    await admin.dispose()


async def hand_written_script(engine: AsyncEngine, prefix: str, schema: str) -> None:
    """The same SQL as one simple-protocol message: one round trip, one implicit transaction."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(HAND_WRITTEN.format(s=schema, prefix=prefix))  # type: ignore[union-attr]


async def hand_written(engine: AsyncEngine, prefix: str, schema: str) -> None:
    async with engine.begin() as conn:
        for statement in HAND_WRITTEN.format(s=schema, prefix=prefix).split(";\n"):
            await conn.execute(text(statement))


@dataclass
class Wire:
    """The messages one block sent to the server, and how many of them committed."""

    round_trips: int = 0
    commits: int = 0
    # Connections checked out (a new one each for an engine without a pool).
    connections: int = 0
    # Per connection: whether an explicit transaction (BEGIN) is open on it.
    open: dict[int, bool] = field(default_factory=dict)
    # SQLAlchemy statements already counted, which asyncpg may log once more.
    counted: list[str] = field(default_factory=list)


@asynccontextmanager
async def count_round_trips() -> AsyncIterator[Wire]:
    """Every message the engines' connections send while the block runs, and the commits.

    SQLAlchemy's statements, and what asyncpg sends itself (BEGIN, COMMIT, a session reset, a
    multi-statement script): each is one round trip to the server. A commit (a WAL flush) is a
    ``COMMIT``, or a script sent outside an explicit transaction, which PostgreSQL runs as one
    implicit transaction (the session reset writes nothing and is not counted).
    """
    wire = Wire()

    def statement(*args: Any) -> None:
        wire.round_trips += 1
        wire.counted.append(args[2])

    def logged(connection: Any, record: Any) -> None:
        query: str = record.query
        if query in wire.counted:  # a script run_script also announced as a statement
            wire.counted.remove(query)
        else:
            wire.round_trips += 1
        key = id(connection)
        if query.startswith("BEGIN"):
            wire.open[key] = True
        elif query.startswith(("COMMIT", "ROLLBACK")):
            wire.commits += query.startswith("COMMIT")
            wire.open[key] = False
        elif not wire.open.get(key) and not query.startswith(POSTGRES_SESSION_RESET):
            wire.commits += 1

    loggers: dict[Any, Any] = {}

    def attach(dbapi_connection: Any, *_: Any) -> None:
        wire.connections += 1
        driver = dbapi_connection.driver_connection
        loggers[driver] = functools.partial(logged, driver)
        driver.add_query_logger(loggers[driver])

    def detach(dbapi_connection: Any, *_: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver in loggers:
            driver.remove_query_logger(loggers.pop(driver))

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Pool, "checkout", attach)
    event.listen(Pool, "checkin", detach)
    try:
        yield wire
        await asyncio.sleep(0.1)  # query-log records reach the loop through call_soon
    finally:
        event.remove(Engine, "before_cursor_execute", statement)
        event.remove(Pool, "checkout", attach)
        event.remove(Pool, "checkin", detach)


async def run(
    url: str, tenants: int, concurrency: int | None, prefix: str, provision: int, databases: int
) -> None:
    await ensure_database(url)
    await reset(url, prefix)
    if provision:
        print("\n".join(await provisioning(url, prefix, provision)), flush=True)
    await reset(url, prefix)
    if databases:
        await drop_databases(url, prefix)
        try:
            print("\n".join(await database_provisioning(url, prefix, databases)), flush=True)
        finally:
            await drop_databases(url, prefix)
            await reset(url, prefix)
    if not tenants:
        return
    config = TenancyConfig(
        database_url=url,
        isolation_strategy="schema",
        schema_prefix=prefix,
        tenant_metadata=MetaData(),  # Alembic owns the tables
        tenant_tables="none",
        database_pool_size=concurrency or 5,
    )
    with tempfile.TemporaryDirectory() as folder:
        alembic_config = script_directory(Path(folder) / "migrations")
        async with Tenancy(config) as tenancy:
            gate = asyncio.Semaphore(concurrency or 5)

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
    await reset(url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=None, help="default: the pool size (5)")
    parser.add_argument("--prefix", default="ops_", help="schema name prefix (dropped at the end)")
    parser.add_argument(
        "--provision",
        type=int,
        default=100,
        help="tenants for the provisioning comparison (0: skip)",
    )
    parser.add_argument(
        "--provision-databases",
        type=int,
        default=0,
        help="tenants for the same comparison under database isolation (0: skip)",
    )
    args = parser.parse_args()
    make_url(args.url)  # fail early on a malformed URL
    asyncio.run(
        run(
            args.url,
            args.tenants,
            args.concurrency,
            args.prefix,
            args.provision,
            args.provision_databases,
        )
    )


if __name__ == "__main__":
    main()

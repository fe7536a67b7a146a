"""Isolation overhead: a bare FastAPI + SQLAlchemy app against the same handler under each strategy.

Every app serves ``GET /items`` (one SELECT of the caller's rows) from the same PostgreSQL server:
the bare app, then row isolation (without and with row-level security), schema (both bindings)
and database isolation. Row-level security needs a role PostgreSQL applies it to: that variant
logs in as a role the benchmark creates and drops (named after the database, so runs against
other databases keep theirs), with a random password.
Apps are measured in alternating rounds in one run, and each result is reported as a ratio of the
bare app's throughput measured beside it, plus what each request sends to the server: its SQL
statements (SQLAlchemy's), and its round trips, every message a connection sends (SQLAlchemy's
statements, and asyncpg's own BEGIN, COMMIT, ROLLBACK, session reset and ping; a message that
carries several statements, such as ``BEGIN; SELECT set_config(…)``, is one round trip). The
``-noreset`` variants leave out the session reset PostgreSQL engines send as a connection returns
to the pool. Requests go through ``httpx.ASGITransport``, so the numbers are the app's own cost
with no network or HTTP server in between; ``cpu µs/req`` is the benchmark process's CPU time per
request (client and app, not the server's), which the load of a shared machine disturbs far less
than throughput. Ratios are taken per round against the bare app of the same round (median over
rounds), and the order of the apps alternates between rounds.

    python -m benchmarks.isolation --tenants 10,1000 --warmup 3000
    python -m benchmarks.isolation --tenants 10 --variants row,rls
    python -m benchmarks.isolation --variants row,row-noreset,search_path,search_path-noreset

Each app's pool is closed after its measurement (the next warm-up fills it again), so the run
holds few server connections at a time on a shared server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import String, event, insert, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool, Pool

from benchmarks.common import add_url_argument, drop_schemas, ensure_database
from fastapi_tenancy import (
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    TenantScoped,
    get_tenant_session,
)
from fastapi_tenancy.engines import note_reset_at_checkin, reset_postgres_session
from fastapi_tenancy.isolation.rls import apply_policies
from fastapi_tenancy.isolation.templates import is_template_database

ROWS_PER_TENANT = 10
DATABASE_MAX_TENANTS = 100  # CREATE DATABASE is slow; larger runs skip database isolation


class Base(DeclarativeBase):
    pass


class Item(TenantScoped, Base):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


# --variants key -> (label, strategy, schema binding, row-level security, pool reset)
VARIANTS = {
    "row": ("row", "row", "auto", False, True),
    "rls": ("row + RLS", "row", "auto", True, True),
    "search_path": ("schema (search_path)", "schema", "search_path", False, True),
    "translate_map": ("schema (translate map)", "schema", "translate_map", False, True),
    "database": ("database", "database", "auto", False, True),
    # The same apps without the session reset on check-in, to measure what it costs.
    "row-noreset": ("row, no reset", "row", "auto", False, False),
    "search_path-noreset": (
        "schema (search_path), no reset",
        "schema",
        "search_path",
        False,
        False,
    ),
}


@dataclass
class Contender:
    name: str
    app: FastAPI
    identifiers: list[str]
    engine: AsyncEngine
    rates: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def bare_app(url: str) -> tuple[FastAPI, AsyncEngine]:
    engine = create_async_engine(url, pool_size=10, max_overflow=0)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app = FastAPI()

    @app.get("/items")
    async def items(s: AsyncSession = Depends(session)) -> list[str]:
        # The single-tenant app's own rows share the table with the row-isolation tenants.
        return list((await s.scalars(select(Item.name).where(Item.tenant_id == "x"))).all())

    return app, engine


def tenancy_app(tenancy: Tenancy) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=tenancy)

    @app.get("/items")
    async def items(s: AsyncSession = Depends(get_tenant_session)) -> list[str]:
        return list((await s.scalars(select(Item.name))).all())

    return app


def rls_role(url: str) -> str:
    """The role the row-level security variant logs in as; roles are server-wide."""
    database = make_url(url).database or "bench"
    return "".join(c for c in database.lower() if c.isalnum() or c == "_") + "_rls_app"


async def reset(url: str, strategy: str) -> None:
    """Drop what an earlier run against ``url`` (``strategy``'s central database) left.

    Its schemas, tables and role live in that database; under database isolation its tenant
    databases are the ones its tenant records name, and only those are dropped: other databases
    on the server belong to someone else, but for the template database kept under this run's
    storage prefix (`storage_prefix`).
    """
    prefix = storage_prefix(url)
    await drop_schemas(url, prefix)
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        databases: list[str] = []
        if strategy == "database" and await conn.scalar(
            text("SELECT to_regclass('tenancy_tenants')")
        ):
            names = await conn.scalars(
                text("SELECT storage_name FROM tenancy_tenants WHERE storage_name IS NOT NULL")
            )
            databases = list(names.all())
        if strategy == "database":
            templates = await conn.scalars(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :prefix)"),
                {"prefix": prefix},
            )
            databases += [name for name in templates if is_template_database(name, prefix)]
        # The library's central tables, its migration version among them: a version left
        # behind would tell the next run's start that the tables exist.
        central = await conn.scalars(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = current_schema() AND tablename LIKE 'tenancy\\_%'"
            )
        )
        tables = ", ".join(["bench_items", *central.all()])
        await conn.execute(text(f"DROP TABLE IF EXISTS {tables} CASCADE"))
        role = rls_role(url)
        if await conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}):
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE {role}"))
    await engine.dispose()
    if not databases:
        return
    admin = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        for name in databases:
            quoted = name.replace('"', '""')
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{quoted}" WITH (FORCE)'))
    await admin.dispose()


async def rls_app_url(url: str) -> str:
    """Policies on the benchmark table, and the URL of a role they apply to (not a superuser)."""
    password = secrets.token_urlsafe(24)
    role = rls_role(url)
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.run_sync(apply_policies, Base.metadata)
        # The password is random URL-safe text; CREATE ROLE takes no bind parameters.
        await conn.execute(
            text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'")
        )
        await conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        tables = "bench_items, tenancy_tenants"
        await conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role}"))
    await engine.dispose()
    return make_url(url).set(username=role, password=password).render_as_string(False)


def storage_prefix(url: str) -> str:
    """The tenant schemas' and databases' prefix for a run with its records at ``url``.

    Named after that database, so that runs against other databases of the server (whose tenant
    databases share the server's namespace) never drop each other's.
    """
    database = make_url(url).database or ""
    return f"b{hashlib.sha256(database.encode()).hexdigest()[:8]}_"


def central_url(url: str, strategy: str) -> str:
    """The database holding ``strategy``'s tenant records (and, under row isolation, its rows).

    Start-up refuses tenants recorded under another strategy, so the strategies that record a
    storage name keep their records in a database of their own on the same server; row isolation
    shares the bare app's database and table.
    """
    if strategy == "row":
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{strategy}").render_as_string(False)


def config(url: str, strategy: str, binding: str = "auto", rls: bool = False) -> TenancyConfig:
    template = make_url(url).set(database="DB").render_as_string(hide_password=False)
    return TenancyConfig(
        database_url=url,
        isolation_strategy=strategy,
        tenant_metadata=Base.metadata,
        schema_prefix=storage_prefix(url),
        database_pool_size=10,
        database_max_overflow=0,
        database_url_template=template.replace("/DB", "/{database}"),
        tenant_pool_size=2,
        database_connection_budget=20,
        schema_binding=binding,
        row_level_security=rls,
    )


async def seed(tenancy: Tenancy, count: int, prefix: str) -> list[str]:
    identifiers = [f"{prefix}{n:05d}" for n in range(count)]
    for identifier in identifiers:
        await tenancy.create_tenant(identifier)
        async with tenancy.session(identifier) as s:
            s.add_all(Item(name=f"{identifier}-{k}") for k in range(ROWS_PER_TENANT))
            await s.commit()
    return identifiers


async def measure(contender: Contender, requests: int, concurrency: int, warmup: int) -> None:
    counted = {"n": 0, "simple": 0}

    def count(*_: Any) -> None:
        counted["n"] += 1

    def count_simple(_record: Any) -> None:
        counted["simple"] += 1

    def attach(dbapi_connection: Any, *_: Any) -> None:
        # asyncpg logs the queries it sends itself (BEGIN, ROLLBACK, a reset, a ping), not the
        # prepared statements SQLAlchemy runs, which before_cursor_execute counts.
        dbapi_connection.driver_connection.add_query_logger(count_simple)

    # Listening on the classes counts tenant engines too (database isolation).
    event.listen(Engine, "before_cursor_execute", count)
    event.listen(Pool, "checkout", attach, insert=True)
    rng = random.Random(7)
    plan = [rng.choice(contender.identifiers) for _ in range(requests)]
    gate = asyncio.Semaphore(concurrency)
    transport = httpx.ASGITransport(app=contender.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def one(identifier: str) -> None:
            async with gate:
                response = await client.get("/items", headers={"X-Tenant-ID": identifier})
            assert response.status_code == 200
            assert len(response.json()) == ROWS_PER_TENANT

        # Warm up every app alike: pools filled, statements prepared, tenants cached.
        await asyncio.gather(*(one(rng.choice(contender.identifiers)) for _ in range(warmup)))
        await asyncio.sleep(0.1)  # query-log records reach the loop through call_soon
        counted.update(n=0, simple=0)
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in plan))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        await asyncio.sleep(0.1)
    event.remove(Engine, "before_cursor_execute", count)
    event.remove(Pool, "checkout", attach)
    contender.rates.append(requests / elapsed)
    contender.statements.append(counted["n"] / requests)
    contender.round_trips.append((counted["n"] + counted["simple"]) / requests)
    contender.cpu.append(cpu / requests * 1e6)


async def run(
    url: str,
    tenant_counts: list[int],
    variant_keys: list[str],
    requests: int,
    concurrency: int,
    rounds: int,
    warmup: int,
) -> None:
    strategies = {VARIANTS[key][1] for key in variant_keys}
    # Row first: its reset drops the row-level security role, granted in that database only.
    ordered = sorted(strategies | {"row"}, key=lambda s: s != "row")
    centrals = {strategy: central_url(url, strategy) for strategy in ordered}
    for central in centrals.values():
        await ensure_database(central)

    async def reset_all() -> None:
        for strategy, central in centrals.items():
            await reset(central, strategy)

    print(f"{'app':<34}{'tenants':>8}{'req/s':>10}{'x bare':>9}{'stmts/req':>11}{'trips/req':>11}")
    for count in tenant_counts:
        await reset_all()
        bare, bare_engine = bare_app(url)
        async with bare_engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(
                insert(Item),
                [{"name": f"x-{k}", "tenant_id": "x"} for k in range(ROWS_PER_TENANT)],
            )
        contenders = [Contender("bare FastAPI + SQLAlchemy", bare, ["x"], bare_engine)]
        runtimes: list[Tenancy] = []
        # Variants of one strategy share its tenants and rows, reached another way.
        seeded: dict[str, list[str]] = {}
        for key in variant_keys:
            label, strategy, binding, rls, pool_reset = VARIANTS[key]
            if strategy == "database" and count > DATABASE_MAX_TENANTS:
                continue
            app_url = await rls_app_url(url) if rls else url
            tenancy = Tenancy(config(central_url(app_url, strategy), strategy, binding, rls))
            await tenancy.start()
            if not pool_reset:
                event.remove(tenancy.engine.sync_engine, "reset", reset_postgres_session)
                event.remove(tenancy.engine.sync_engine, "connect", note_reset_at_checkin)
            runtimes.append(tenancy)
            if strategy not in seeded:
                seeded[strategy] = await seed(tenancy, count, prefix=strategy[0])
            app = tenancy_app(tenancy)
            contenders.append(Contender(label, app, seeded[strategy], tenancy.engine))
        for round_number in range(rounds):
            # Each round measures every app once, the bare one between the others' halves, in
            # the reverse order every other round: a machine whose load drifts during a round
            # favours no app.
            order = contenders[1:]
            if round_number % 2:
                order.reverse()
            half = len(order) // 2
            for contender in [*order[:half], contenders[0], *order[half:]]:
                async with LifespanManager(contender.app):
                    await measure(contender, requests, concurrency, warmup)
                await contender.engine.dispose()
        bare_rates = contenders[0].rates
        for contender in contenders:
            rate = statistics.median(contender.rates)
            # The ratio of each round against the bare app of the same round, then the median:
            # steadier than a ratio of medians on a machine whose load changes between rounds.
            ratio = statistics.median(
                mine / bare for mine, bare in zip(contender.rates, bare_rates, strict=True)
            )
            stmts = statistics.median(contender.statements)
            trips = statistics.median(contender.round_trips)
            cpu = statistics.median(contender.cpu)
            print(
                f"{contender.name:<34}{count:>8}{rate:>10.0f}{ratio:>9.2f}{stmts:>11.2f}"
                f"{trips:>11.2f}{cpu:>11.0f}",
                flush=True,
            )
        for tenancy in runtimes:
            await tenancy.close()
        await bare_engine.dispose()
    await reset_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--tenants", default="10,1000", help="tenant counts, comma-separated")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"apps to measure beside the bare one, comma-separated: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=3000, help="requests per app before each measurement"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.tenants.split(",")]
    keys = [key.strip() for key in args.variants.split(",") if key.strip()]
    unknown = sorted(set(keys) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    asyncio.run(
        run(args.url, counts, keys, args.requests, args.concurrency, args.rounds, args.warmup)
    )


if __name__ == "__main__":
    main()

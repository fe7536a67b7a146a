"""Database isolation at fleet scale: more tenants than connections, over HTTP.

Three apps serve ``GET /items`` (one SELECT of ten rows) under uvicorn, one worker each, from the
same PostgreSQL server:

* **bare**: FastAPI + SQLAlchemy on one database, a pool as large as the client's concurrency;
  every ratio is of its throughput, measured in the same run;
* **connect per request**: the same handler on the database the ``X-Tenant-ID`` header names,
  through a ``NullPool``: a brand-new connection for every request (the floor);
* **tenancy**: `TenancyMiddleware` with database isolation, every tenant in a database of its own
  and ``--budget`` server connections for all of them together.

All three run at once; a keep-alive HTTP/1.1 client in this process drives them in alternating
rounds of equal length, with uniform traffic (every tenant alike) and skewed traffic (the tenant
of rank k drawn with weight 1/k^1.1). While an app is measured, ``pg_stat_activity`` is sampled
every 20 ms for that app's server connections (the connect-per-request app logs in as a role of
its own, ``h5_fleet_floor``); the largest count is printed, with the connections opened per
request (``pg_stat_database.sessions``).

With ``--pgbouncer`` a PgBouncer of the benchmark's own (`benchmarks.pgbouncer`: transaction mode,
``server_reset_query_always = 1``) runs in front of the server, and two more apps go through it:
the connect-per-request app (a second floor: a connect to PgBouncer is cheap, a server connection
is opened only when PgBouncer has none idle for the database) and the tenancy app with
``TENANCY_DATABASE_PGBOUNCER=true``, whose budget then caps its client connections to PgBouncer
(``--pgbouncer-budget``, default: one per tenant). PgBouncer caps each app's server connections
over all tenant databases at the budget (``max_user_connections``); each app logs in as a role of
its own, so the sampled server connections and the connects per request
(``pg_stat_database.sessions``: server connections, not connections to PgBouncer) are each app's.

    python -m benchmarks.fleet --tenants 200,1000 --budget 50
    python -m benchmarks.fleet --tenants 200 --pgbouncer
    python -m benchmarks.fleet --tenants 200 --keep   # keep the databases for the next run

Databases are named ``h5_fleet_*``: ``h5_fleet`` holds the tenant records, ``h5_fleet_bare`` the
bare app's rows, and one per tenant (made with ``CREATE DATABASE ... TEMPLATE``, in parallel).
They are dropped afterwards (with the role) unless ``--keep``; a later run reuses what exists.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import random
import statistics
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, Header, Request
from sqlalchemy import String, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from benchmarks import common, pgbouncer
from fastapi_tenancy import Tenancy, TenancyConfig, TenancyMiddleware, get_tenant_session
from fastapi_tenancy.isolation.database import DatabaseIsolation

REPOSITORY = common.REPOSITORY
DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
PREFIX = "h5_fleet"
TEMPLATE = f"{PREFIX}_template"
BARE = f"{PREFIX}_bare"
TENANT_PREFIX = f"{PREFIX}_t"
FLOOR_ROLE = f"{PREFIX}_floor"
# With --pgbouncer: the tenancy app's tenant records (URLs through PgBouncer) and the roles the two
# apps through PgBouncer log in as, so that the server's connections tell the apps apart.
BOUNCER_REGISTRY = f"{PREFIX}pgb"
BOUNCER_ROLE = f"{PREFIX}_pgb"
BOUNCER_FLOOR_ROLE = f"{PREFIX}_pgb_floor"
ROLES = (FLOOR_ROLE, BOUNCER_ROLE, BOUNCER_FLOOR_ROLE)
ROWS = 10
SKEW = 1.1
SAMPLE_SECONDS = 0.02
# Targets of issue 16, checked against the run's own measurements.
UNIFORM_OVER_CONNECT = 1.2
SKEWED_OVER_BARE = 0.45


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "fleet_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def database_url(server: str, database: str) -> str:
    return make_url(server).set(database=database).render_as_string(hide_password=False)


def tenant_database(identifier: str) -> str:
    return f"{PREFIX}_{identifier}"


def identifiers(count: int) -> list[str]:
    return [f"t{n:05d}" for n in range(count)]


# --- the apps (uvicorn factories, configured by the environment) ---


def bare() -> FastAPI:
    """uvicorn factory: one database, a pool as large as the client's concurrency."""
    engine = create_async_engine(
        os.environ["FLEET_BARE_URL"],
        pool_size=int(os.environ["FLEET_POOL_SIZE"]),
        max_overflow=0,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app = FastAPI()

    @app.get("/items")
    async def items(s: AsyncSession = Depends(session)) -> list[str]:
        return list((await s.scalars(select(Item.name))).all())

    return app


def connect_per_request() -> FastAPI:
    """uvicorn factory: the tenant's database from the header, a new connection per request."""
    server = os.environ["FLEET_SERVER_URL"]
    user = os.environ.get("FLEET_FLOOR_USER", FLOOR_ROLE)
    # Through PgBouncer in transaction mode: no statement cache, unique statement names (as
    # TENANCY_DATABASE_PGBOUNCER does for the tenancy app).
    bouncer: dict[str, Any] = (
        {
            "statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
        }
        if os.environ.get("FLEET_PGBOUNCER")
        else {}
    )
    engines: dict[str, AsyncEngine] = {}

    async def session(x_tenant_id: str = Header()) -> AsyncIterator[AsyncSession]:
        engine = engines.get(x_tenant_id)
        if engine is None:
            url = make_url(database_url(server, tenant_database(x_tenant_id)))
            url = url.set(username=user, password=None)
            if bouncer:
                url = url.update_query_dict({"prepared_statement_cache_size": "0"})
            engine = engines[x_tenant_id] = create_async_engine(
                url, poolclass=NullPool, connect_args=bouncer
            )
        async with AsyncSession(engine, expire_on_commit=False) as s:
            yield s

    app = FastAPI()

    @app.get("/items")
    async def items(s: AsyncSession = Depends(session)) -> list[str]:
        return list((await s.scalars(select(Item.name))).all())

    return app


def tenancy() -> FastAPI:
    """uvicorn factory: the same handler behind the middleware, configured by ``TENANCY_*``."""
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig())

    @app.get("/items")
    async def items(s: AsyncSession = Depends(get_tenant_session)) -> list[str]:
        return list((await s.scalars(select(Item.name))).all())

    @app.get("/health/budget")
    async def budget(request: Request) -> dict[str, float]:
        # Excluded from tenant resolution, as /health is: the connection budget's counters.
        isolation = request.app.state.tenancy.isolation
        assert isinstance(isolation, DatabaseIsolation)
        counted = isolation.engines.budget
        return {
            "connects": counted.connects,
            "reuses": counted.reuses,
            "waits": counted.waits,
            "waited": counted.waited,
            "trims": counted.trims,
        }

    return app


# --- databases ---


def admin_engine(server: str) -> AsyncEngine:
    return create_async_engine(
        database_url(server, "postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )


async def existing_databases(server: str) -> set[str]:
    admin = admin_engine(server)
    async with admin.connect() as conn:
        rows = await conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
            {"p": PREFIX.replace("_", "\\_") + "%"},
        )
        names = {name for (name,) in rows.all()}
    await admin.dispose()
    return names


async def make_databases(server: str, tenants: list[str], workers: int) -> None:
    """The template, the bare app's database and every missing tenant database."""
    existing = await existing_databases(server)
    admin = admin_engine(server)
    async with admin.connect() as conn:
        role = text("SELECT 1 FROM pg_roles WHERE rolname = :r")
        for name in ROLES:
            if not await conn.scalar(role, {"r": name}):
                await conn.execute(text(f"CREATE ROLE {name} LOGIN"))
    if TEMPLATE not in existing:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
        engine = create_async_engine(database_url(server, TEMPLATE), poolclass=NullPool)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            # The connect-per-request app (and each app through PgBouncer) logs in as a role of
            # its own, so that the server's connections can be told apart by app while all are up.
            await conn.execute(text(f"GRANT SELECT ON fleet_items TO {', '.join(ROLES)}"))
            await conn.execute(insert(Item), [{"name": f"item-{k}"} for k in range(ROWS)])
        await engine.dispose()
    wanted = [BARE, *(tenant_database(t) for t in tenants)]
    missing = [name for name in wanted if name not in existing]
    if missing:
        print(f"creating {len(missing)} databases from {TEMPLATE} ...", flush=True)

    async def create(chunk: list[str]) -> None:
        async with admin.connect() as conn:
            for name in chunk:
                await conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))

    # Copies of one template may run at once (only a connection to the template is refused).
    await asyncio.gather(*(create(missing[n::workers]) for n in range(workers)))
    await admin.dispose()


async def drop_databases(server: str) -> None:
    admin = admin_engine(server)
    names = sorted(await existing_databases(server))
    async with admin.connect() as conn:
        for name in names:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for role in ROLES:
            await conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    await admin.dispose()


def tenancy_environment(
    server: str, budget: int, pool_size: int | None, engines: int, registry: str = PREFIX
) -> dict[str, str]:
    environment = {
        "TENANCY_DATABASE_URL": database_url(server, registry),
        "TENANCY_ISOLATION_STRATEGY": "database",
        # The tenant databases are copies of a template that already holds the table.
        "TENANCY_TENANT_TABLES": "none",
        "TENANCY_DATABASE_CONNECTION_BUDGET": str(budget),
        "TENANCY_MAX_CACHED_ENGINES": str(engines),
        # Tenant records stay cached for the whole run: this measures the connections, not
        # the lookups (a run on a busy machine outlasts the default minute).
        "TENANCY_CACHE_TTL": "3600",
    }
    if pool_size is not None:
        environment["TENANCY_TENANT_POOL_SIZE"] = str(pool_size)
    return environment


async def register_tenants(
    environment: dict[str, str],
    tenants: list[str],
    server: str,
    registry: str = PREFIX,
    url_of: Callable[[str], str] | None = None,
) -> None:
    """Tenant records naming each tenant's database (made by this benchmark) explicitly.

    ``url_of`` gives a tenant database's URL (default: on ``server`` directly).
    """
    if url_of is None:
        url_of = partial(database_url, server)
    existing = await existing_databases(server)
    if registry not in existing:
        admin = admin_engine(server)
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{registry}"'))
        await admin.dispose()
    previous = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        async with Tenancy(TenancyConfig()) as runtime:
            known = {tenant.identifier for tenant in await runtime.list_tenants()}
            gate = asyncio.Semaphore(8)

            async def register(identifier: str) -> None:
                async with gate:
                    await runtime.create_tenant(
                        identifier,
                        database_url=url_of(tenant_database(identifier)),
                    )

            await asyncio.gather(*(register(t) for t in tenants if t not in known))
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- measuring ---


def serve(factory: str, env: dict[str, str]) -> AbstractAsyncContextManager[tuple[int, int]]:
    """Run ``uvicorn benchmarks.fleet:<factory>`` until the block ends; yields port and pid."""
    return common.serve_process(f"benchmarks.fleet:{factory}", env)


async def postmaster(server: str) -> int | None:
    """The PostgreSQL server's process id, when it runs on this machine (else None)."""
    admin = admin_engine(server)
    async with admin.connect() as conn:
        backend = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        found = parent_of_postgres(backend)  # while the backend is still running
    await admin.dispose()
    return found


def parent_of_postgres(backend: int) -> int | None:
    try:
        with open(f"/proc/{backend}/comm") as comm:
            if comm.read().strip() != "postgres":
                return None  # another process that happens to have the remote backend's id
        with open(f"/proc/{backend}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
    except (OSError, StopIteration):
        return None


Reading = tuple[float | None, float | None]


class CpuClock:
    """CPU seconds used by an app's process (with PgBouncer's, when ``bouncer`` is its process
    id) and by the PostgreSQL server (None: unknown)."""

    def __init__(self, app: int, server: int | None, bouncer: int | None = None) -> None:
        self.app = app
        self.server = server
        self.bouncer = bouncer

    def read(self) -> Reading:
        server = None if self.server is None else common.postgres_cpu_seconds(self.server)
        app = common.cpu_seconds(self.app)
        if self.bouncer is not None:
            app = spent(app, 0.0, common.cpu_seconds(self.bouncer))
        return app, server


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    peak_connections: int = 0
    errors: int = 0
    connects: int = 0
    # CPU seconds of the app's process and of the server while it was measured (None: unknown)
    app_cpu: float | None = 0.0
    server_cpu: float | None = 0.0

    def add_cpu(self, before: Reading, after: Reading) -> None:
        self.app_cpu = spent(self.app_cpu, before[0], after[0])
        self.server_cpu = spent(self.server_cpu, before[1], after[1])


def spent(total: float | None, before: float | None, after: float | None) -> float | None:
    if total is None or before is None or after is None:
        return None
    return total + after - before


def chooser(tenants: list[str], traffic: str) -> Callable[[random.Random], str]:
    if traffic == "uniform":
        return lambda rng: rng.choice(tenants)
    weights = [1 / (rank**SKEW) for rank in range(1, len(tenants) + 1)]
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    return lambda rng: tenants[bisect.bisect(cumulative, rng.random() * total)]


async def load(
    port: int, seconds: float, connections: int, pick: Callable[[random.Random], str], seed: int
) -> tuple[float, list[float], int]:
    """Requests per second, each request's latency and the errors over ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    latencies: list[float] = []
    errors = 0

    async def client(n: int) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + n)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while loop.time() < deadline:
                request = f"GET /items HTTP/1.1\r\nHost: b\r\nX-Tenant-ID: {pick(rng)}\r\n\r\n"
                started = loop.time()
                writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    latencies.append(loop.time() - started)
                else:
                    errors += 1
        finally:
            writer.close()

    started = loop.time()
    await asyncio.gather(*(client(n) for n in range(connections)))
    return len(latencies) / (loop.time() - started), latencies, errors


@asynccontextmanager
async def sampled(server: str, where: str) -> AsyncIterator[tuple[list[int], list[int]]]:
    """Sample the server's connections matching ``where`` until the block ends.

    Yields the samples and, once the block has ended, the sessions opened to the tenant
    databases and the bare app's database meanwhile (``pg_stat_database.sessions``).
    """
    samples: list[int] = []
    sessions: list[int] = []
    stop = asyncio.Event()
    admin = admin_engine(server)
    opened = text("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname LIKE :p")
    pattern = {"p": PREFIX.replace("_", "\\_") + "\\_%"}

    async def sample() -> None:
        async with admin.connect() as conn:
            query = text(f"SELECT count(*) FROM pg_stat_activity WHERE {where}")
            while not stop.is_set():
                samples.append(int((await conn.execute(query)).scalar_one()))
                await asyncio.sleep(SAMPLE_SECONDS)

    async with admin.connect() as conn:
        before = int((await conn.execute(opened, pattern)).scalar_one())
    task = asyncio.create_task(sample())
    try:
        yield samples, sessions
    finally:
        stop.set()
        await task
        async with admin.connect() as conn:
            # Statistics reach pg_stat_database when a backend reports them, at the latest at
            # its exit; a clear snapshot reads the latest.
            await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            sessions.append(int((await conn.execute(opened, pattern)).scalar_one()) - before)
        await admin.dispose()


async def budget_counters(port: int) -> dict[str, float]:
    """The tenancy app's connection-budget counters (``GET /health/budget``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health/budget HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        response = await reader.read()
    finally:
        writer.close()
    counters: dict[str, float] = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return counters


def round_ratios(mine: list[float], theirs: list[float]) -> list[float]:
    return [a / b for a, b in zip(mine, theirs, strict=True) if b]


def cpu_per_request(result: Result) -> float:
    """Seconds of CPU (the app's and the server's) per request; 0 when unknown."""
    if result.app_cpu is None or result.server_cpu is None:
        return 0.0
    return (result.app_cpu + result.server_cpu) / max(1, len(result.latencies) + result.errors)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def run_fleet(args: argparse.Namespace, count: int) -> bool:
    server = args.server
    tenants = identifiers(count)
    engines = args.max_engines or count
    await make_databases(server, tenants, args.workers)
    environment = tenancy_environment(server, args.budget, args.pool_size, engines)
    await register_tenants(environment, tenants, server)
    base_env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    envs = {
        "bare": {
            **base_env,
            "FLEET_BARE_URL": database_url(server, BARE),
            "FLEET_POOL_SIZE": str(args.connections),
        },
        "connect_per_request": {**base_env, "FLEET_SERVER_URL": server},
        "tenancy": {**base_env, **environment},
    }
    labels = {
        "bare": "bare FastAPI + SQLAlchemy",
        "connect_per_request": "connect per request (NullPool)",
        "tenancy": f"tenancy (database, budget {args.budget})",
    }
    tenant_databases = "datname LIKE '" + TENANT_PREFIX.replace("_", "\\_") + "%'"
    user = make_url(server).username or "postgres"
    where = {
        "bare": f"datname = '{BARE}'",
        "connect_per_request": f"usename = '{FLOOR_ROLE}'",
        "tenancy": f"{tenant_databases} AND usename = '{user}'",
    }
    met = True
    server_pid = await postmaster(server)
    clocks = {name: partial(CpuClock, server=server_pid) for name in envs}
    async with AsyncExitStack() as stack:
        if args.pgbouncer:
            # Server connections per app through PgBouncer: at most the budget over all tenant
            # databases (max_user_connections), the client side is the app's own budget.
            bouncer_budget = args.pgbouncer_budget or count
            bouncer = stack.enter_context(
                pgbouncer.running(
                    server,
                    [BOUNCER_ROLE, BOUNCER_FLOOR_ROLE],
                    # PgBouncer counts a server connection as gone once it has closed the
                    # socket, before the backend has exited: a few slots are kept for those.
                    budget=args.budget - max(1, args.budget // 25),
                    pool_size=args.pool_size or TenancyConfig().tenant_pool_size,
                    clients=bouncer_budget + args.connections + 100,
                    idle_seconds=args.pgbouncer_idle,
                )
            )
            through = tenancy_environment(
                server, bouncer_budget, args.pool_size, engines, BOUNCER_REGISTRY
            )
            through["TENANCY_DATABASE_PGBOUNCER"] = "true"
            # The records name this run's PgBouncer port: made afresh every run.
            admin = admin_engine(server)
            async with admin.connect() as conn:
                await conn.execute(
                    text(f'DROP DATABASE IF EXISTS "{BOUNCER_REGISTRY}" WITH (FORCE)')
                )
            await admin.dispose()
            await register_tenants(
                through,
                tenants,
                server,
                BOUNCER_REGISTRY,
                lambda database: bouncer.url(server, database, BOUNCER_ROLE),
            )
            floor_url = bouncer.url(server, "postgres", BOUNCER_FLOOR_ROLE)
            envs["connect_per_request_pgb"] = {
                **base_env,
                "FLEET_SERVER_URL": floor_url,
                "FLEET_FLOOR_USER": BOUNCER_FLOOR_ROLE,
                "FLEET_PGBOUNCER": "1",
            }
            envs["tenancy_pgb"] = {**base_env, **through}
            labels["connect_per_request_pgb"] = "PgBouncer: connect per request"
            labels["tenancy_pgb"] = f"PgBouncer: tenancy (budget {bouncer_budget})"
            where["connect_per_request_pgb"] = f"usename = '{BOUNCER_FLOOR_ROLE}'"
            where["tenancy_pgb"] = f"{tenant_databases} AND usename = '{BOUNCER_ROLE}'"
            for name in ("connect_per_request_pgb", "tenancy_pgb"):
                clocks[name] = partial(CpuClock, server=server_pid, bouncer=bouncer.pid)
        ports: dict[str, int] = {}
        clock: dict[str, CpuClock] = {}
        for name in envs:
            factory = name.removesuffix("_pgb")  # the same app, through PgBouncer
            ports[name], pid = await stack.enter_async_context(serve(factory, envs[name]))
            clock[name] = clocks[name](pid)
        tenancy_apps = [name for name in ports if name.startswith("tenancy")]
        for traffic in args.traffic:
            pick = chooser(tenants, traffic)
            results = {name: Result() for name in envs}
            for port in ports.values():
                await load(port, args.warmup, args.connections, pick, seed=0)
            counted = {name: await budget_counters(ports[name]) for name in tenancy_apps}
            # Alternating rounds: a machine whose load changes affects every app alike.
            for round_ in range(args.rounds):
                for name, port in ports.items():
                    async with sampled(server, where[name]) as (samples, sessions):
                        before = clock[name].read()
                        rate, latencies, errors = await load(
                            port, args.seconds, args.connections, pick, seed=round_ + 1
                        )
                        after = clock[name].read()
                    result = results[name]
                    result.add_cpu(before, after)
                    result.rates.append(rate)
                    result.latencies.extend(latencies)
                    result.errors += errors
                    result.peak_connections = max([result.peak_connections, *samples])
                    result.connects += sessions[0]
            met &= report(args, count, traffic, results, labels)
            for name in tenancy_apps:
                ended = await budget_counters(ports[name])
                budget = {key: ended[key] - counted[name][key] for key in ended}
                checkouts = max(1.0, budget["connects"] + budget["reuses"])
                waits = max(1.0, budget["waits"])
                print(
                    f"{'':>9}budget of {labels[name]}: {budget['reuses'] / checkouts:.0%} of "
                    f"checkouts reuse a connection; {budget['waits'] / checkouts:.2f} wait in "
                    f"line per checkout, {budget['waited'] * 1000 / waits:.1f} ms per wait; "
                    f"{budget['trims'] / checkouts:.2f} idle connections closed per checkout",
                    flush=True,
                )
    return met


def report(
    args: argparse.Namespace,
    count: int,
    traffic: str,
    results: dict[str, Result],
    labels: dict[str, str],
) -> bool:
    base = statistics.median(results["bare"].rates)
    # The machine's load as the rounds end: on a shared machine it decides the absolute rates.
    load_average = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{'':>9}load average {load_average}")
    for name, result in results.items():
        rate = statistics.median(result.rates)
        p50 = percentile(result.latencies, 0.50) * 1000
        p99 = percentile(result.latencies, 0.99) * 1000
        requests = max(1, len(result.latencies) + result.errors)
        per_request = result.connects / requests
        cpu = [
            "-" if seconds is None else f"{seconds * 1000 / requests:.2f}"
            for seconds in (result.app_cpu, result.server_cpu)
        ]
        print(
            f"{count:>7}  {traffic:<8}{labels[name]:<36}{rate:>8.0f}{rate / base:>8.2f}"
            f"{p50:>8.1f}{p99:>8.1f}{per_request:>10.2f}{result.peak_connections:>7}"
            f"{result.errors:>7}{cpu[0]:>8}{cpu[1]:>8}",
            flush=True,
        )
    checks: list[tuple[str, bool]] = []
    # Each tenancy app against the floor of the issue (connect per request, directly); through
    # PgBouncer also against the floor through PgBouncer, printed only.
    floor = results["connect_per_request"]
    for name in (n for n in results if n.startswith("tenancy")):
        ours = results[name]
        label = labels[name]
        checks += [
            (
                f"{label}: server connections {ours.peak_connections} <= budget {args.budget}",
                ours.peak_connections <= args.budget,
            ),
            (f"{label}: no failed requests ({ours.errors})", ours.errors == 0),
        ]
        # Each round's ratio against the other app's round next to it, then the median: steadier
        # than a ratio of medians when the machine's load drifts between rounds.
        over_floor = round_ratios(ours.rates, floor.rates)
        over_bare = round_ratios(ours.rates, results["bare"].rates)
        rounds = ", ".join(f"{a:.2f}" for a in over_floor)
        mine = cpu_per_request(ours)
        cpu_ratio = cpu_per_request(floor) / mine if mine else 0.0
        print(
            f"{'':>9}{label} / connect per request by round: {rounds}; "
            f"CPU per request (app + server): {cpu_ratio:.2f} x less"
        )
        if name == "tenancy_pgb":
            other = round_ratios(ours.rates, results["connect_per_request_pgb"].rates)
            print(
                f"{'':>9}{label} / PgBouncer: connect per request by round: "
                + ", ".join(f"{a:.2f}" for a in other)
            )
        if traffic == "uniform":
            ratio = statistics.median(over_floor)
            checks.append(
                (
                    f"{label}: {ratio:.2f} x connect per request >= {UNIFORM_OVER_CONNECT}",
                    ratio >= UNIFORM_OVER_CONNECT,
                )
            )
        else:
            ratio = statistics.median(over_bare)
            ours_p99 = percentile(ours.latencies, 0.99) * 1000
            floor_p99 = percentile(floor.latencies, 0.99) * 1000
            checks.append(
                (f"{label}: {ratio:.2f} x bare >= {SKEWED_OVER_BARE}", ratio >= SKEWED_OVER_BARE)
            )
            checks.append(
                (
                    f"{label}: p99 {ours_p99:.1f} ms <= connect per request's {floor_p99:.1f} ms",
                    ours_p99 <= floor_p99,
                )
            )
    for description, ok in checks:
        print(f"{'':>9}target: {description}: {'met' if ok else 'NOT met'}")
    return all(ok for _, ok in checks)


async def run(args: argparse.Namespace) -> bool:
    print(
        f"database isolation: budget {args.budget}, "
        f"tenant_pool_size {args.pool_size or TenancyConfig().tenant_pool_size}, "
        f"max_cached_engines {args.max_engines or 'tenants'}; {args.connections} client "
        f"connections; {args.rounds} rounds x {args.seconds:g} s per app"
    )
    header = f"{'tenants':>7}  {'traffic':<8}{'app':<36}{'req/s':>8}{'x bare':>8}"
    print(
        header + f"{'p50 ms':>8}{'p99 ms':>8}{'connects':>10}{'conns':>7}{'errors':>7}"
        f"{'app ms':>8}{'pg ms':>8}"
    )
    met = True
    try:
        for count in args.tenants:
            met &= await run_fleet(args, count)
    finally:
        if not args.keep:
            await drop_databases(args.server)
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=os.environ.get("TENANCY_BENCH_POSTGRES_URL", DEFAULT_SERVER),
        help="a URL of the PostgreSQL server (its database part is ignored)",
    )
    parser.add_argument("--tenants", default="200,1000", help="tenant counts, comma-separated")
    parser.add_argument("--traffic", default="uniform,skewed", help="uniform, skewed or both")
    parser.add_argument("--budget", type=int, default=50, help="database_connection_budget")
    parser.add_argument(
        "--pool-size", type=int, default=None, help="tenant_pool_size (default: the config's)"
    )
    parser.add_argument(
        "--max-engines", type=int, default=0, help="max_cached_engines (default: the tenants)"
    )
    parser.add_argument("--connections", type=int, default=10, help="client connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per app before")
    parser.add_argument("--workers", type=int, default=4, help="concurrent CREATE DATABASE")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="also run the connect-per-request and tenancy apps through a PgBouncer of their own",
    )
    parser.add_argument(
        "--pgbouncer-budget",
        type=int,
        default=0,
        help="the tenancy app's budget through PgBouncer: client connections (default: tenants)",
    )
    parser.add_argument(
        "--pgbouncer-idle",
        type=float,
        default=0.5,
        help="PgBouncer's server_idle_timeout, seconds",
    )
    args = parser.parse_args()
    args.tenants = [int(n) for n in args.tenants.split(",")]
    args.traffic = [t.strip() for t in args.traffic.split(",") if t.strip()]
    raise SystemExit(0 if asyncio.run(run(args)) else 1)


if __name__ == "__main__":
    main()

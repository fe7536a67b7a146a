"""Isolation overhead: a bare FastAPI + SQLAlchemy app against the same handler under each strategy.

Every app serves ``GET /items`` (one SELECT of the caller's rows) from the same PostgreSQL server:
the bare app, then row, schema (both bindings) and database isolation.
Apps are measured in alternating rounds in one run, and each result is reported as a ratio of the
bare app's throughput measured beside it, plus the SQL statements each request sends to the
server. Requests go through ``httpx.ASGITransport``, so the numbers are the app's own cost with no
network or HTTP server in between.

    python -m benchmarks.isolation --tenants 10,1000 --warmup 3000
"""

from __future__ import annotations

import argparse
import asyncio
import random
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
from sqlalchemy.pool import NullPool

from benchmarks.common import add_url_argument, drop_schemas, ensure_database
from fastapi_tenancy import (
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    TenantScoped,
    get_tenant_session,
)

ROWS_PER_TENANT = 10
DATABASE_MAX_TENANTS = 100  # CREATE DATABASE is slow; larger runs skip database isolation


class Base(DeclarativeBase):
    pass


class Item(TenantScoped, Base):
    __tablename__ = "bench_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@dataclass
class Contender:
    name: str
    app: FastAPI
    identifiers: list[str]
    rates: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)


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


async def reset(url: str) -> None:
    await drop_schemas(url, "bench_")
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS bench_items, tenancy_tenants CASCADE"))
    await engine.dispose()
    admin = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        names = await conn.execute(
            text("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")
        )
        for (name,) in names.all():
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    await admin.dispose()


def config(url: str, strategy: str, binding: str = "auto") -> TenancyConfig:
    template = make_url(url).set(database="DB").render_as_string(hide_password=False)
    return TenancyConfig(
        database_url=url,
        isolation_strategy=strategy,
        tenant_metadata=Base.metadata,
        schema_prefix="bench_",
        database_pool_size=10,
        database_max_overflow=0,
        database_url_template=template.replace("/DB", "/{database}"),
        tenant_pool_size=2,
        database_connection_budget=20,
        schema_binding=binding,
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
    counted = {"n": 0}

    def count(*_: Any) -> None:
        counted["n"] += 1

    # Listening on the Engine class counts tenant engines too (database isolation).
    event.listen(Engine, "before_cursor_execute", count)
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
        counted["n"] = 0
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in plan))
        elapsed = time.perf_counter() - started
    event.remove(Engine, "before_cursor_execute", count)
    contender.rates.append(requests / elapsed)
    contender.statements.append(counted["n"] / requests)


async def run(
    url: str, tenant_counts: list[int], requests: int, concurrency: int, rounds: int, warmup: int
) -> None:
    await ensure_database(url)
    print(f"{'app':<28}{'tenants':>8}{'req/s':>10}{'x bare':>9}{'stmts/req':>11}")
    for count in tenant_counts:
        await reset(url)
        bare, bare_engine = bare_app(url)
        async with bare_engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(
                insert(Item),
                [{"name": f"x-{k}", "tenant_id": "x"} for k in range(ROWS_PER_TENANT)],
            )
        contenders = [Contender("bare FastAPI + SQLAlchemy", bare, ["x"])]
        runtimes: list[Tenancy] = []
        variants = [
            ("row", "row", "auto"),
            ("schema (search_path)", "schema", "search_path"),
            ("schema (translate map)", "schema", "translate_map"),
        ]
        if count <= DATABASE_MAX_TENANTS:
            variants.append(("database", "database", "auto"))
        for label, strategy, binding in variants:
            tenancy = Tenancy(config(url, strategy, binding))
            await tenancy.start()
            runtimes.append(tenancy)
            if binding == "translate_map":
                identifiers = contenders[-1].identifiers  # the same tenants as search_path
            else:
                identifiers = await seed(tenancy, count, prefix=strategy[0])
            contenders.append(Contender(label, tenancy_app(tenancy), identifiers))
        for _ in range(rounds):
            for contender in contenders:
                async with LifespanManager(contender.app):
                    await measure(contender, requests, concurrency, warmup)
        base = statistics.median(contenders[0].rates)
        for contender in contenders:
            rate = statistics.median(contender.rates)
            stmts = statistics.median(contender.statements)
            print(f"{contender.name:<28}{count:>8}{rate:>10.0f}{rate / base:>9.2f}{stmts:>11.2f}")
        for tenancy in runtimes:
            await tenancy.close()
        await bare_engine.dispose()
    await reset(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_url_argument(parser)
    parser.add_argument("--tenants", default="10,1000", help="tenant counts, comma-separated")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=3000, help="requests per app before each measurement"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.tenants.split(",")]
    asyncio.run(run(args.url, counts, args.requests, args.concurrency, args.rounds, args.warmup))


if __name__ == "__main__":
    main()

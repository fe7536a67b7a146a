"""Soak: mixed tenants on every strategy, concurrent traffic, random faults; no leak, no 500.

Five deployments run side by side, each an app with its own central database behind its own
`FaultProxy`: row, schema and database isolation on PostgreSQL, row and schema isolation on
MariaDB. The PostgreSQL row deployment also shares a private Redis (tenant cache and rate limits,
failing closed). Database-per-tenant deployments reach their tenant databases through the proxy
as well, so every fault reaches tenant data too.

While random reads and writes go to random tenants, an injector keeps breaking things: it cuts
every live connection of a proxy, makes a proxy refuse or blackhole traffic for a moment,
terminates the deployments' PostgreSQL backends, and kills and restarts Redis. Every response is
checked: a 200 holds only the caller's rows, a 503 is the generic body, anything else is an
error. Afterwards every tenant is served again without a restart, and each tenant's table holds
only its own rows.

Bounded in count and time; scale it with TENANCY_SOAK_REQUESTS, TENANCY_SOAK_SECONDS,
TENANCY_SOAK_CONCURRENCY and TENANCY_SOAK_SEED. The summary line is printed at the end:
``soak: requests=... faults=... errors_by_status=... leaks=0``, followed by the exception behind
every 5xx: each one that escaped an app (a 500) with its type, message and where it was raised,
and the distinct causes of the 503s with their counts. Any 500 fails the soak with that list.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy.isolation.servers import create_database, drop_database
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import GENERIC_503, Failures, Running, foreign_rows, running
from tests.support.models import Item
from tests.support.redis_server import PrivateRedis
from tests.support.services import MYSQL_URL, POSTGRES_URL, require_server, reset_database

REQUESTS = int(os.environ.get("TENANCY_SOAK_REQUESTS", "4000"))
SECONDS = float(os.environ.get("TENANCY_SOAK_SECONDS", "90"))
CONCURRENCY = int(os.environ.get("TENANCY_SOAK_CONCURRENCY", "16"))
SEED = int(os.environ.get("TENANCY_SOAK_SEED", "20261123"))
TENANTS_PER_DEPLOYMENT = 4
# Faults are spaced and held this long (seconds): short, so traffic keeps flowing between them.
FAULT_GAP = (0.05, 0.3)
FAULT_HOLD = (0.05, 0.3)
RECOVERY_ATTEMPTS = 100
RECOVERY_STEP_SECONDS = 0.1

pytestmark = [pytest.mark.slow, pytest.mark.soak, pytest.mark.postgres, pytest.mark.mysql]

# (name, strategy, server URL): each deployment gets a central database of its own.
DEPLOYMENTS = [
    ("pgrow", "row", POSTGRES_URL),
    ("pgschema", "schema", POSTGRES_URL),
    ("pgdatabase", "database", POSTGRES_URL),
    ("myrow", "row", MYSQL_URL),
    ("myschema", "schema", MYSQL_URL),
]


@dataclass
class Deployment:
    """One running app, and the proxy in front of its databases."""

    name: str
    proxy: FaultProxy
    service: Running


@dataclass
class Tally:
    """What the soak saw: statuses, faults by kind, leaks and transport errors."""

    statuses: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    bad_bodies: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    failures: Failures = field(default_factory=Failures)

    def record(self, response: httpx.Response, identifier: str, ids: dict[str, str]) -> None:
        self.statuses[response.status_code] += 1
        leaked = foreign_rows(response, identifier, ids)
        if leaked:
            self.leaks.append(f"{identifier}: {leaked}")
        if response.status_code == 503 and response.json() != GENERIC_503:
            self.bad_bodies.append(response.text)

    def summary(self, requests: int, seconds: float) -> str:
        errors = {status: n for status, n in sorted(self.statuses.items()) if status != 200}
        kinds = ",".join(f"{kind}:{n}" for kind, n in sorted(self.faults.items()))
        return (
            f"soak: requests={requests} faults={sum(self.faults.values())} "
            f"errors_by_status={errors} leaks={len(self.leaks)} "
            f"fault_kinds={kinds} exceptions={len(self.exceptions)} seconds={seconds:.1f}\n"
            + self.failures.report()
        )


def central_url(server_url: str, name: str) -> str:
    database = f"{TEST_STORAGE_PREFIX}soak_{name}"
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


@asynccontextmanager
async def central_database(url: str) -> AsyncIterator[None]:
    name = make_url(url).database or ""
    await drop_database(url, name)
    await create_database(url, name)
    try:
        yield
    finally:
        await drop_database(url, name)


@asynccontextmanager
async def deployments(redis: PrivateRedis, failures: Failures) -> AsyncIterator[list[Deployment]]:
    async with AsyncExitStack() as stack:
        started = []
        for name, strategy, server_url in DEPLOYMENTS:
            url = central_url(server_url, name)
            await stack.enter_async_context(central_database(url))
            port = 5432 if url.startswith("postgres") else 3306
            proxy = await stack.enter_async_context(FaultProxy.for_url(url, port))
            overrides: dict[str, Any] = {"database_pool_timeout": 5}
            if name == "pgrow":
                overrides |= {
                    "redis_url": redis.url,
                    "enable_rate_limiting": True,
                    "rate_limit_per_minute": 1_000_000,
                    "rate_limit_fail_closed": True,
                }
            # The template follows the proxied URL: tenant databases are behind the proxy too.
            config = isolation_config((strategy, proxy.url_for(url)), **overrides)
            identifiers = [f"{name}t{n}" for n in range(TENANTS_PER_DEPLOYMENT)]
            service = await stack.enter_async_context(
                running(config, identifiers, failures=failures)
            )
            started.append(Deployment(name, proxy, service))
        yield started


async def terminate_backends() -> int:
    """Terminate the PostgreSQL backends of the soak's databases, central and tenant ones alike.

    They all start with this run's storage prefix; no other session on the server is touched.
    """
    engine = create_async_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            killed = await conn.scalars(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname LIKE :prefix"
                ),
                {"prefix": TEST_STORAGE_PREFIX.replace("_", "\\_") + "%"},
            )
            return sum(1 for ok in killed if ok)
    finally:
        await engine.dispose()


async def inject_faults(
    rng: random.Random,
    fleet: list[Deployment],
    redis: PrivateRedis,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    """Break something at random until ``stop`` is set; always undo what it broke."""

    async def hold() -> None:
        await asyncio.sleep(rng.uniform(*FAULT_HOLD))

    async def cut(target: Deployment) -> None:
        target.proxy.cut()

    async def refuse(target: Deployment) -> None:
        await target.proxy.refuse()
        try:
            await hold()
        finally:
            await target.proxy.restore()

    async def pause(target: Deployment) -> None:
        target.proxy.pause()
        try:
            await hold()
        finally:
            await target.proxy.restore()

    async def terminate(_target: Deployment) -> None:
        await terminate_backends()

    async def restart_redis(_target: Deployment) -> None:
        await redis.stop()
        try:
            await hold()
        finally:
            await redis.start()

    faults: dict[str, Callable[[Deployment], Awaitable[None]]] = {
        "cut": cut,
        "refuse": refuse,
        "pause": pause,
        "pg_terminate_backend": terminate,
        "redis_restart": restart_redis,
    }
    kinds = sorted(faults)
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(*FAULT_GAP))
        kind = rng.choice(kinds)
        await faults[kind](rng.choice(fleet))
        tally.faults[kind] += 1


async def send_traffic(
    rng: random.Random, fleet: list[Deployment], tally: Tally, deadline: float
) -> int:
    """Up to REQUESTS random reads and writes, CONCURRENCY at a time, until ``deadline``."""
    gate = asyncio.Semaphore(CONCURRENCY)
    plan = []
    for n in range(REQUESTS):
        deployment = rng.choice(fleet)
        identifier = rng.choice(sorted(deployment.service.ids))
        plan.append((deployment, identifier, rng.random() < 0.4, n))
    sent = 0

    async def call(deployment: Deployment, identifier: str, write: bool, n: int) -> None:
        nonlocal sent
        async with gate:
            if time.monotonic() > deadline:
                return
            sent += 1
            service = deployment.service
            headers = {"X-Tenant-ID": identifier}
            try:
                if write:
                    response = await service.client.post(
                        "/items", params={"name": f"{identifier}:soak-{n}"}, headers=headers
                    )
                else:
                    response = await service.client.get("/items", headers=headers)
            except Exception as exc:  # a transport error is a finding, not a crash of the soak
                tally.exceptions.append(f"{identifier}: {exc!r}")
                return
            tally.record(response, identifier, service.ids)

    await asyncio.gather(*(call(*step) for step in plan))
    return sent


async def served_again(deployment: Deployment, identifier: str) -> bool:
    for _ in range(RECOVERY_ATTEMPTS):
        response = await deployment.service.client.get(
            "/items", headers={"X-Tenant-ID": identifier}
        )
        if response.status_code == 200:
            return True
        await asyncio.sleep(RECOVERY_STEP_SECONDS)
    return False


async def rows_of_others(deployment: Deployment) -> list[str]:
    """Rows in each tenant's storage that are not that tenant's."""
    found = []
    for identifier, tenant_id in deployment.service.ids.items():
        async with deployment.service.tenancy.session(identifier) as session:
            items = (await session.scalars(select(Item))).all()
        found += [
            f"{identifier}: {item.name} ({item.tenant_id})"
            for item in items
            if item.tenant_id != tenant_id or not item.name.startswith(identifier + ":")
        ]
    return found


async def test_soak_mixed_tenants_with_random_faults_never_leaks_nor_fails_with_500(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    require_server("mysql", MYSQL_URL, 3306)
    for url in (POSTGRES_URL, MYSQL_URL):
        await reset_database(url)
    rng = random.Random(SEED)
    tally = Tally()
    started = time.monotonic()
    try:
        async with PrivateRedis() as redis, deployments(redis, tally.failures) as fleet:
            stop = asyncio.Event()
            injector = asyncio.create_task(inject_faults(rng, fleet, redis, tally, stop))
            try:
                async with asyncio.timeout(SECONDS * 3):
                    sent = await send_traffic(
                        random.Random(SEED + 1), fleet, tally, started + SECONDS
                    )
            finally:
                stop.set()
                await injector

            unrecovered = [
                identifier
                for deployment in fleet
                for identifier in deployment.service.ids
                if not await served_again(deployment, identifier)
            ]
            foreign = [row for deployment in fleet for row in await rows_of_others(deployment)]
    finally:
        for url in (POSTGRES_URL, MYSQL_URL):
            await reset_database(url)

    summary = tally.summary(sent, time.monotonic() - started)
    with capsys.disabled():
        print("\n" + summary)
    assert tally.leaks == [], summary
    assert foreign == [], summary
    assert set(tally.statuses) <= {200, 503}, summary
    assert tally.failures.escaped == [], summary
    assert tally.bad_bodies == [], summary
    assert tally.exceptions == [], summary
    assert unrecovered == [], summary
    assert sum(tally.faults.values()) > 0, summary
    assert tally.statuses[200] > 0, summary

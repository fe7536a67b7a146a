"""The long fault soak: real uvicorn processes, every isolation strategy, faults on a seeded plan.

`run_soak` sets up, per isolation strategy (row, schema, database; all on PostgreSQL), a central
database of its own behind a `FaultProxy` (database isolation reaches its tenant databases through
a second proxy), provisions the tenants (active ones and suspended ones), and starts
``processes`` uvicorn processes per strategy serving `tests.faults.soak.app`, all sharing one
private ``redis-server`` (tenant cache, rate limits failing closed). Then, at once:

* traffic: ``requests`` requests, ``concurrency`` at a time, from one async httpx client per
  process: reads of the tenant's latest rows, writes of one row whose name is a marker unique to
  the request, and requests for unknown and for suspended tenants;
* faults, one at a time on a seeded plan (each round tries every kind once, in a random order):
  the central database refusing connections, cutting every live connection, a tenant database
  renamed away and back (database isolation), Redis killed and restarted with its data (RDB
  snapshot) and without, and a process's pool exhausted by requests that hold their connections.
  After each fault, probes (one every 0.1 s) measure how soon what it hit answers ``2xx`` again.

Afterwards it waits until every tenant is served again by every process, lets the audit trail
settle, stops the servers (which drains their audit queues) and checks, as the database owner:
no row in any tenant's storage belongs to another tenant, no write answered ``2xx`` is missing,
and every audited request has its audit record unless it is counted as dropped. `SoakReport`
holds the numbers and renders the one-screen summary.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.isolation.servers import create_database, drop_database
from tests.faults.soak.app import REQUEST_HEADER
from tests.support.backends import TEST_STORAGE_PREFIX, database_url_template
from tests.support.fault_proxy import FaultProxy
from tests.support.http_servers import serving
from tests.support.redis_server import PrivateRedis
from tests.support.services import POSTGRES_URL, free_port

__all__ = ["SoakSettings", "SoakReport", "run_soak"]

STRATEGIES = ("row", "schema", "database")
SUSPENDED_PER_STRATEGY = 2
# Share of each kind in the traffic; the rest are reads.
WRITE_SHARE = 0.35
UNKNOWN_SHARE = 0.075
SUSPENDED_SHARE = 0.075
# Every pool is small, so exhausting one takes a handful of requests and the soak's servers
# never hold more than a few dozen connections on the shared PostgreSQL.
POOL_SIZE = 3
MAX_OVERFLOW = 2
POOL_TIMEOUT = 3
TENANT_POOL_SIZE = 2
CONNECTION_BUDGET = 6
CLIENT_TIMEOUT = 30.0
PROVISIONING_CONCURRENCY = 4
DROP_CONCURRENCY = 6
# Recovery probes after each fault: one every step, for at most this long.
PROBE_STEP_SECONDS = 0.1
PROBE_SECONDS = 30.0
RECOVERY_ATTEMPTS = 150
RECOVERY_STEP_SECONDS = 0.1
AUDIT_SETTLE_ATTEMPTS = 60
AUDIT_SETTLE_STEP_SECONDS = 0.5
RENAME_ATTEMPTS = 40
RENAME_STEP_SECONDS = 0.05
SAMPLES = 5
# How the middleware logs a storage failure that came after the response was complete.
AFTER_RESPONSE = "tenant storage failed after the response"
FAULT_KINDS = (
    "central_refuse",
    "central_cut",
    "tenant_database_renamed",
    "redis_restart_with_data",
    "redis_restart_empty",
    "pool_exhausted",
)
EXPECTED = {
    "read": {200, 503},
    "write": {200, 503},
    "unknown": {404, 503},
    "suspended": {403, 503},
}


@dataclass(frozen=True)
class SoakSettings:
    requests: int = 20_000
    tenants: int = 20
    strategies: tuple[str, ...] = STRATEGIES
    processes: int = 2
    concurrency: int = 32
    seed: int = 20261202
    # Traffic stops after this many seconds even if not every request was sent.
    seconds: float = 3600.0
    # Faults: the pause before each one, and how long each one lasts (seconds).
    fault_gap: tuple[float, float] = (0.5, 1.5)
    fault_hold: tuple[float, float] = (0.3, 1.5)
    # Where the server logs and event files go (a temporary folder when None).
    work_dir: Path | None = None


@dataclass
class Deployment:
    """One strategy: its central database, proxies, tenants and server processes."""

    strategy: str
    central_url: str
    central: FaultProxy
    tenant_proxy: FaultProxy | None
    env: dict[str, str]
    # identifier -> (tenant id, storage name)
    active: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    suspended: list[str] = field(default_factory=list)
    # Every tenant database created (database isolation), suspended tenants' too.
    databases: list[str] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    _identifiers: list[str] = field(default_factory=list)

    @property
    def identifiers(self) -> list[str]:
        """The active tenants, in a stable order (the traffic plan picks from it)."""
        if len(self._identifiers) != len(self.active):
            self._identifiers = sorted(self.active)
        return self._identifiers

    @property
    def owner_of(self) -> dict[str, str]:
        return {tenant_id: identifier for identifier, (tenant_id, _) in self.active.items()}


@dataclass
class Fault:
    kind: str
    strategy: str | None
    target: str
    started: float
    ended: float = 0.0
    # (strategy, process or None, identifier or None) that must answer 2xx again.
    waiting: set[tuple[str, int | None, str | None]] = field(default_factory=set)
    recovered: float | None = None

    @property
    def recovery_seconds(self) -> float | None:
        """From the fault's end until the first request that then succeeded was sent."""
        return None if self.recovered is None else self.recovered - self.ended


@dataclass
class Write:
    strategy: str
    identifier: str
    status: int | None = None


@dataclass
class SoakReport:
    """What one soak run measured; `render` gives the one-screen summary."""

    settings: dict[str, Any]
    requests: int = 0
    seconds: float = 0.0
    # Wall-clock seconds of each phase: set-up, traffic, after (recovery, audit, checks).
    phases: dict[str, float] = field(default_factory=dict)
    latency: dict[str, float | None] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    errors_5xx: Counter[str] = field(default_factory=Counter)
    status_500: int = 0
    # The exceptions behind the first few 500s: messages, causes, where each was raised.
    samples_500: list[str] = field(default_factory=list)
    # Storage failures after the response was complete, which the server logged (not raised).
    failed_after_response: int = 0
    raised_after_response: Counter[str] = field(default_factory=Counter)
    leaks_in_responses: list[str] = field(default_factory=list)
    foreign_rows: list[str] = field(default_factory=list)
    missing_writes: list[str] = field(default_factory=list)
    audited_requests: int = 0
    audit_records: int = 0
    audit_missing: int = 0
    audit_unexpected: int = 0
    audit_ambiguous: int = 0
    audit_spilled: int = 0
    audit_dropped_counted: int = 0
    audit_dropped_source: str = ""
    audit_sink_failures: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    recovery: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    unrecovered: list[str] = field(default_factory=list)
    not_served_after: list[str] = field(default_factory=list)
    fault_traffic: Counter[str] = field(default_factory=Counter)
    background_warnings: Counter[str] = field(default_factory=Counter)

    def invariants(self) -> dict[str, bool]:
        """Each invariant the soak checks, and whether it held."""
        return {
            "no 500": self.status_500 == 0,
            "no unexpected status": not self.unexpected,
            "no foreign row in a response": not self.leaks_in_responses,
            "no foreign row in storage": not self.foreign_rows,
            "no acknowledged write missing": not self.missing_writes,
            "audit records match audited requests (or are counted as dropped)": (
                self.audit_missing == self.audit_dropped_counted and self.audit_unexpected == 0
            ),
            "every fault recovered": not self.unrecovered,
            "every tenant served after the run": not self.not_served_after,
        }

    def render(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        s = self.settings
        lines = [
            f"soak: {self.requests} requests in {self.seconds:.1f} s ({rate:.0f}/s), "
            f"strategies {','.join(s['strategies'])} x {s['tenants']} tenants "
            f"(+{SUSPENDED_PER_STRATEGY} suspended), {s['processes']} uvicorn processes each, "
            f"concurrency {s['concurrency']}, seed {s['seed']}",
            "phases (s): " + " ".join(f"{k}={v:.1f}" for k, v in self.phases.items()),
            "statuses: " + _counts(self.statuses),
            "latency (s): " + " ".join(f"{k}={_seconds(v)}" for k, v in self.latency.items()),
            "5xx by status and exception:",
            *[f"  {n:>8}  {key}" for key, n in self.errors_5xx.most_common(12)],
            f"500s: {self.status_500}",
            f"unexpected statuses: {_counts(self.unexpected) or 0}",
            f"exceptions raised after the response started: "
            f"{sum(self.raised_after_response.values())} {_top(self.raised_after_response)}; "
            f"storage failures after the response, logged: {self.failed_after_response}",
            *[f"  500: {sample}" for sample in self.samples_500[:3]],
            f"foreign rows: in responses {len(self.leaks_in_responses)}, "
            f"in storage {len(self.foreign_rows)}",
            f"writes acknowledged 2xx but missing: {len(self.missing_writes)}",
            f"audit: {self.audited_requests} audited requests, {self.audit_records} records, "
            f"{self.audit_spilled} still in a spill file, "
            f"{self.audit_missing} missing, {self.audit_unexpected} unexpected, "
            f"{self.audit_ambiguous} ambiguous (no answer); counted as dropped: "
            f"{self.audit_dropped_counted} ({self.audit_dropped_source}); "
            f"sink failures: {self.audit_sink_failures}",
            f"faults: {sum(self.faults.values())} ({_counts(self.faults)})",
            "recovery (s): from the end of a fault to the sending of the first probe to get a 2xx:",
            *[
                f"  {kind:<24} n={r['n']:<5} p50={_seconds(r['p50'])} p95={_seconds(r['p95'])} "
                f"max={_seconds(r['max'])} unrecovered={r['unrecovered']}"
                for kind, r in sorted(self.recovery.items())
            ],
            f"fault traffic (pool holders): {_counts(self.fault_traffic)}",
            f"background warnings: {sum(self.background_warnings.values())} "
            f"{_top(self.background_warnings)}",
            "invariants: "
            + ", ".join(
                f"{name}: {'ok' if ok else 'FAIL'}" for name, ok in self.invariants().items()
            ),
        ]
        return "\n".join(lines)

    def to_json(self) -> str:
        # Not `asdict`: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["invariants"] = self.invariants()
        data["foreign_rows"] = self.foreign_rows[:100]
        data["missing_writes"] = self.missing_writes[:100]
        return json.dumps(data, indent=2, sort_keys=True, default=str)


def _counts(counter: Counter[Any]) -> str:
    return " ".join(f"{key}={n}" for key, n in sorted(counter.items(), key=lambda kv: str(kv[0])))


def _top(counter: Counter[str]) -> str:
    return "; ".join(f"{n}x {key}" for key, n in counter.most_common(3))


def _seconds(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class Soak:
    """One run: the state the traffic, the faults and the checks share."""

    def __init__(self, settings: SoakSettings, redis: PrivateRedis, work_dir: Path) -> None:
        self.settings = settings
        self.redis = redis
        self.work_dir = work_dir
        self.events_dir = work_dir / "events"
        self.deployments: dict[str, Deployment] = {}
        self.report = SoakReport(settings={k: v for k, v in asdict(settings).items()})
        self.writes: dict[str, Write] = {}
        self.acknowledged: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.server_errors: dict[str, int] = {}
        self.faults: list[Fault] = []
        self.latencies = array("d")
        self.admin = create_async_engine(
            make_url(POSTGRES_URL).set(database="postgres"),
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
        )

    # --- set-up -------------------------------------------------------------------------------

    def central_url(self, strategy: str) -> str:
        database = f"{TEST_STORAGE_PREFIX}ls_central_{strategy}"
        return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)

    async def drop_leftovers(self) -> None:
        """Drop the databases an earlier, interrupted run may have left (this run's names)."""
        pattern = TEST_STORAGE_PREFIX.replace("_", "\\_") + "ls\\_%"
        async with self.admin.connect() as conn:
            names = (
                await conn.scalars(
                    text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": pattern}
                )
            ).all()
        await self.drop_databases(list(names))

    def settings_for(
        self, deployment_url: str, strategy: str, tenant_url: str | None
    ) -> dict[str, str]:
        env = {
            "TENANCY_DATABASE_URL": deployment_url,
            "TENANCY_ISOLATION_STRATEGY": strategy,
            "TENANCY_TENANT_METADATA": "tests.support.models:Base.metadata",
            "TENANCY_SCHEMA_PREFIX": TEST_STORAGE_PREFIX,
            "TENANCY_REDIS_URL": self.redis.url,
            "TENANCY_CACHE_KEY_PREFIX": f"soak-{strategy}",
            "TENANCY_ENABLE_RATE_LIMITING": "true",
            "TENANCY_RATE_LIMIT_PER_MINUTE": "100000000",
            "TENANCY_RATE_LIMIT_FAIL_CLOSED": "true",
            "TENANCY_ENABLE_AUDIT_LOGGING": "true",
            "TENANCY_ENABLE_METRICS": "true",
            "TENANCY_EXCLUDED_PATHS": "/health,/soak/*",
            "TENANCY_DATABASE_POOL_SIZE": str(POOL_SIZE),
            "TENANCY_DATABASE_MAX_OVERFLOW": str(MAX_OVERFLOW),
            "TENANCY_DATABASE_POOL_TIMEOUT": str(POOL_TIMEOUT),
            "TENANCY_TENANT_POOL_SIZE": str(TENANT_POOL_SIZE),
            "TENANCY_DATABASE_CONNECTION_BUDGET": str(CONNECTION_BUDGET),
        }
        if tenant_url is not None:
            env["TENANCY_DATABASE_URL_TEMPLATE"] = database_url_template(tenant_url)
        if "audit_spill_path" in TenancyConfig.model_fields:
            # One per strategy: each has a central database of its own to replay it into.
            spill = self.work_dir / f"audit-spill-{strategy}.jsonl"
            env["TENANCY_AUDIT_SPILL_PATH"] = str(spill)
        return env

    @asynccontextmanager
    async def deployment(self, strategy: str) -> AsyncIterator[Deployment]:
        url = self.central_url(strategy)
        name = make_url(url).database or ""
        async with AsyncExitStack() as stack:
            await create_database(url, name)
            stack.push_async_callback(drop_database, url, name)
            central = await stack.enter_async_context(FaultProxy.for_url(url, 5432))
            tenant_proxy = None
            tenant_url = None
            if strategy == "database":
                tenant_proxy = await stack.enter_async_context(FaultProxy.for_url(url, 5432))
                tenant_url = tenant_proxy.url_for(url)
            env = self.settings_for(central.url_for(url), strategy, tenant_url)
            deployment = Deployment(strategy, url, central, tenant_proxy, env)
            # Tenant databases are dropped before the central one that lists them.
            stack.push_async_callback(self.drop_tenant_databases, deployment)
            await self.provision(deployment)
            yield deployment

    async def provision(self, deployment: Deployment) -> None:
        # The servers' settings, read the way the servers read them: from TENANCY_* strings.
        values: dict[str, Any] = {
            key.removeprefix("TENANCY_").lower(): value for key, value in deployment.env.items()
        }
        config = TenancyConfig(**values)
        short = deployment.strategy[:3]
        gate = asyncio.Semaphore(PROVISIONING_CONCURRENCY)

        async def create(tenancy: Tenancy, identifier: str, *, suspend: bool) -> None:
            async with gate:
                tenant = await tenancy.create_tenant(identifier)
                deployment.databases.append(tenant.storage_name or "")
                if suspend:
                    await tenancy.suspend_tenant(identifier)
                    deployment.suspended.append(identifier)
                else:
                    deployment.active[identifier] = (tenant.id, tenant.storage_name)

        async with Tenancy(config) as tenancy:
            # The first alone: under row isolation it creates the shared tables, and concurrent
            # CREATE TABLE IF NOT EXISTS of one table races on PostgreSQL (a unique violation
            # in pg_type).
            await create(tenancy, f"ls-{short}-00", suspend=False)
            await asyncio.gather(
                *(
                    create(tenancy, f"ls-{short}-{n:02d}", suspend=False)
                    for n in range(1, self.settings.tenants)
                ),
                *(
                    create(tenancy, f"ls-{short}-off{n}", suspend=True)
                    for n in range(SUSPENDED_PER_STRATEGY)
                ),
            )
        deployment.suspended.sort()

    async def drop_tenant_databases(self, deployment: Deployment) -> None:
        """Drop the tenant databases (and any left renamed away), several at a time."""
        wanted = {
            name
            for storage in deployment.databases
            if storage
            for name in (storage, storage + "_away")
        }
        if deployment.strategy != "database" or not wanted:
            return
        async with self.admin.connect() as conn:
            existing = set((await conn.scalars(text("SELECT datname FROM pg_database"))).all())
        await self.drop_databases(sorted(wanted & existing))

    async def drop_databases(self, names: list[str]) -> None:
        gate = asyncio.Semaphore(DROP_CONCURRENCY)

        async def drop(name: str) -> None:
            async with gate:
                url = make_url(POSTGRES_URL).set(database=name)
                await drop_database(url.render_as_string(hide_password=False), name)

        await asyncio.gather(*(drop(name) for name in names))

    @asynccontextmanager
    async def servers(self, deployment: Deployment) -> AsyncIterator[None]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TENANCY_")},
            **deployment.env,
            "SOAK_EVENTS": str(self.events_dir),
        }
        async with AsyncExitStack() as stack:
            # A task group: if one process fails to start, the others' starts are cancelled.
            async with asyncio.TaskGroup() as group:
                starts = [
                    group.create_task(self.serve(stack, deployment, env, n))
                    for n in range(self.settings.processes)
                ]
            bases = [start.result() for start in starts]
            limits = httpx.Limits(max_connections=self.settings.concurrency + 16)
            for base_url in bases:
                client = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT, limits=limits)
                )
                deployment.clients.append(client)
            yield

    async def serve(
        self, stack: AsyncExitStack, deployment: Deployment, env: dict[str, str], n: int
    ) -> str:
        """Start server process ``n`` of ``deployment``; ``stack`` stops it."""
        port = free_port()
        command = [
            sys.executable,
            *("-m", "uvicorn", "tests.faults.soak.app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            *("--no-access-log", "--timeout-keep-alive", "120"),
        ]
        log = self.work_dir / f"{deployment.strategy}-{n}.log"
        async with AsyncExitStack() as own:
            base_url = await own.enter_async_context(
                serving(command, port=port, env=env, ready_path="/health", log=log)
            )
            stack.push_async_exit(own.pop_all())
        return base_url

    # --- traffic ------------------------------------------------------------------------------

    def plan(self, rng: random.Random, n: int) -> tuple[str, int, str, str]:
        """Request ``n``: (strategy, process, kind, identifier)."""
        strategy = rng.choice(self.settings.strategies)
        deployment = self.deployments[strategy]
        process = rng.randrange(self.settings.processes)
        roll = rng.random()
        if roll < UNKNOWN_SHARE:
            return strategy, process, "unknown", f"ls-nobody-{rng.randrange(1000)}"
        if roll < UNKNOWN_SHARE + SUSPENDED_SHARE:
            return strategy, process, "suspended", rng.choice(deployment.suspended)
        kind = "write" if roll < UNKNOWN_SHARE + SUSPENDED_SHARE + WRITE_SHARE else "read"
        return strategy, process, kind, rng.choice(deployment.identifiers)

    async def send_traffic(self, deadline: float) -> None:
        rng = random.Random(self.settings.seed)
        counter = itertools.count()

        async def worker() -> None:
            while time.monotonic() < deadline:
                n = next(counter)
                if n >= self.settings.requests:
                    return
                await self.one_request(n, *self.plan(rng, n))

        await asyncio.gather(*(worker() for _ in range(self.settings.concurrency)))

    async def one_request(
        self, n: int, strategy: str, process: int, kind: str, identifier: str
    ) -> None:
        deployment = self.deployments[strategy]
        client = deployment.clients[process]
        rid = str(n)
        headers = {"X-Tenant-ID": identifier, REQUEST_HEADER.decode(): rid}
        marker = f"{identifier}.{n}"
        if kind == "write":
            self.writes[marker] = Write(strategy, identifier)
        started = time.monotonic()
        self.report.requests += 1
        try:
            if kind == "write":
                response = await client.post(f"/items/{marker}", headers=headers)
            else:
                response = await client.get("/items", headers=headers)
        except httpx.HTTPError as exc:
            self.report.statuses["transport error"] += 1
            self.report.unexpected[f"{kind}: {type(exc).__name__}"] += 1
            return
        status = response.status_code
        self.latencies.append(time.monotonic() - started)
        self.report.statuses[str(status)] += 1
        if status not in EXPECTED[kind]:
            self.report.unexpected[f"{kind} {status}"] += 1
        if status >= 500:
            self.server_errors[rid] = status
        if kind in ("read", "write"):
            self.check_response(deployment, identifier, response)
        if kind == "write":
            self.writes[marker].status = status
            if 200 <= status < 300:
                self.acknowledged[(strategy, identifier)].add(marker)

    def check_response(
        self, deployment: Deployment, identifier: str, response: httpx.Response
    ) -> None:
        tenant_id = deployment.active[identifier][0]
        if response.status_code != 200:
            others = [other for other in deployment.active if other != identifier]
            named = [other for other in others if other in response.text]
            if named:
                self.report.leaks_in_responses.append(f"{identifier}: error body names {named}")
            return
        body = response.json()
        rows = body if isinstance(body, list) else [body]
        for row in rows:
            if row.get("tenant_id") != tenant_id or not str(row.get("name")).startswith(
                identifier + "."
            ):
                self.report.leaks_in_responses.append(f"{identifier}: {row}")

    # --- faults -------------------------------------------------------------------------------

    async def inject_faults(self, stop: asyncio.Event) -> None:
        """Faults one after another until ``stop``; each round tries every kind once."""
        rng = random.Random(self.settings.seed + 1)
        kinds = [
            kind
            for kind in FAULT_KINDS
            if kind != "tenant_database_renamed" or "database" in self.settings.strategies
        ]
        while not stop.is_set():
            for kind in rng.sample(kinds, len(kinds)):
                try:
                    await asyncio.wait_for(stop.wait(), rng.uniform(*self.settings.fault_gap))
                    return
                except TimeoutError:
                    pass
                await self.inject(kind, rng)

    async def inject(self, kind: str, rng: random.Random) -> None:
        hold = rng.uniform(*self.settings.fault_hold)
        strategy = rng.choice(self.settings.strategies)
        deployment = self.deployments[strategy]
        every: set[tuple[str, int | None, str | None]] = {
            (name, None, None) for name in self.settings.strategies
        }
        fault = Fault(kind, strategy, "central database", time.monotonic())
        if kind == "central_refuse":
            fault.waiting = {(strategy, None, None)}
            await deployment.central.refuse()
            try:
                await asyncio.sleep(hold)
            finally:
                await deployment.central.restore()
        elif kind == "central_cut":
            fault.waiting = {(strategy, None, None)}
            deployment.central.cut()
        elif kind == "tenant_database_renamed":
            target = self.deployments["database"]
            identifier = rng.choice(sorted(target.active))
            fault.strategy, fault.target = "database", identifier
            fault.waiting = {("database", None, identifier)}
            await self.rename_away(target.active[identifier][1] or "", hold)
        elif kind in ("redis_restart_with_data", "redis_restart_empty"):
            fault.strategy, fault.target = None, "redis"
            fault.waiting = every
            await self.redis.stop(snapshot=kind == "redis_restart_with_data")
            if kind == "redis_restart_empty":
                self.redis.forget_snapshot()
            try:
                await asyncio.sleep(hold)
            finally:
                await self.redis.start()
        elif kind == "pool_exhausted":
            process = rng.randrange(self.settings.processes)
            fault.target = f"process {process}"
            fault.waiting = {(strategy, process, None)}
            # Held past the pool timeout, so waiting requests do time out.
            await self.exhaust_pool(deployment, process, hold + POOL_TIMEOUT)
        fault.ended = time.monotonic()
        self.faults.append(fault)
        self.report.faults[kind] += 1
        recoveries = await asyncio.gather(*(self.recovered(key) for key in fault.waiting))
        if all(sent is not None for sent in recoveries):
            fault.recovered = max(sent for sent in recoveries if sent is not None)

    async def recovered(self, key: tuple[str, int | None, str | None]) -> float | None:
        """When the first request that then succeeded was sent to ``key`` after the fault.

        A probe goes out every `PROBE_STEP_SECONDS` without waiting for the earlier ones, so the
        answer is that precise however slow the answers are; None after `PROBE_SECONDS`.
        """
        strategy, process, identifier = key
        deployment = self.deployments[strategy]
        succeeded: list[float] = []
        done = asyncio.Event()

        async def probe(n: int) -> None:
            client = deployment.clients[n % len(deployment.clients) if process is None else process]
            tenant = identifier or deployment.identifiers[n % len(deployment.identifiers)]
            headers = {"X-Tenant-ID": tenant, REQUEST_HEADER.decode(): "probe"}
            sent = time.monotonic()
            try:
                response = await client.get("/items", headers=headers)
            except httpx.HTTPError as exc:
                self.report.fault_traffic[f"probe {type(exc).__name__}"] += 1
                return
            self.report.fault_traffic[f"probe {response.status_code}"] += 1
            if response.status_code == 500:
                self.report.status_500 += 1
            if response.status_code == 200:
                succeeded.append(sent)
                done.set()

        probes: list[asyncio.Task[None]] = []
        try:
            for n in range(int(PROBE_SECONDS / PROBE_STEP_SECONDS)):
                probes.append(asyncio.create_task(probe(n)))
                try:
                    await asyncio.wait_for(done.wait(), PROBE_STEP_SECONDS)
                    break
                except TimeoutError:
                    pass
        finally:
            # Recovered (or given up): the probes still waiting for an answer are not needed.
            for task in probes:
                task.cancel()
            await asyncio.gather(*probes, return_exceptions=True)
        return min(succeeded) if succeeded else None

    async def rename_away(self, name: str, hold: float) -> None:
        """Take a tenant database away (no connections, renamed) for ``hold`` seconds."""
        away = name + "_away"
        async with self.admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            try:
                for _ in range(RENAME_ATTEMPTS):
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :name"
                        ),
                        {"name": name},
                    )
                    try:
                        await conn.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{away}"'))
                        break
                    except Exception:  # still in use: the terminated backends are exiting
                        await asyncio.sleep(RENAME_STEP_SECONDS)
                else:
                    raise RuntimeError(f"could not rename the tenant database {name}")
                try:
                    await asyncio.sleep(hold)
                finally:
                    await conn.execute(text(f'ALTER DATABASE "{away}" RENAME TO "{name}"'))
            finally:
                await conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))

    async def exhaust_pool(self, deployment: Deployment, process: int, hold: float) -> None:
        """Send one process more requests that hold a connection than its pool has."""
        tenants = sorted(deployment.active)
        if deployment.strategy == "database":
            # Different tenants, so the global budget runs out rather than one engine's pool.
            holders = [tenants[n % len(tenants)] for n in range(CONNECTION_BUDGET + 2)]
        else:
            holders = tenants[: POOL_SIZE + MAX_OVERFLOW + 2]
        client = deployment.clients[process]

        async def holder(identifier: str) -> None:
            try:
                response = await client.get(
                    "/hold",
                    params={"seconds": hold},
                    headers={"X-Tenant-ID": identifier, REQUEST_HEADER.decode(): "hold"},
                )
                self.report.fault_traffic[str(response.status_code)] += 1
                if response.status_code == 500:
                    self.report.status_500 += 1
            except httpx.HTTPError as exc:
                self.report.fault_traffic[type(exc).__name__] += 1

        await asyncio.gather(*(holder(identifier) for identifier in holders))

    # --- after the run ------------------------------------------------------------------------

    async def serve_everyone_again(self) -> None:
        """Every active tenant on every process answers 2xx again (bounded retries)."""

        async def until_served(strategy: str, process: int, identifier: str) -> None:
            client = self.deployments[strategy].clients[process]
            for _ in range(RECOVERY_ATTEMPTS):
                headers = {"X-Tenant-ID": identifier, REQUEST_HEADER.decode(): "probe"}
                try:
                    response = await client.get("/items", headers=headers)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 200:
                    return
                if response is not None and response.status_code == 500:
                    self.report.status_500 += 1
                await asyncio.sleep(RECOVERY_STEP_SECONDS)
            self.report.not_served_after.append(f"{strategy}/{process}/{identifier}")

        await asyncio.gather(
            *(
                until_served(strategy, process, identifier)
                for strategy, deployment in self.deployments.items()
                for process in range(self.settings.processes)
                for identifier in deployment.active
            )
        )

    async def audit_rows(self, deployment: Deployment) -> list[tuple[str, int | None]]:
        engine = create_async_engine(deployment.central_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT path, status FROM tenancy_audit WHERE action = 'request:POST'")
                )
                return [(path, status) for path, status in rows]
        finally:
            await engine.dispose()

    async def audit_count(self, deployment: Deployment) -> int:
        engine = create_async_engine(deployment.central_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                count = await conn.scalar(text("SELECT count(*) FROM tenancy_audit"))
                return int(count or 0)
        finally:
            await engine.dispose()

    async def settle_audit(self) -> None:
        """Wait until the audit tables stop growing: the queues are drained."""
        last = -1
        for _ in range(AUDIT_SETTLE_ATTEMPTS):
            count = sum([await self.audit_count(d) for d in self.deployments.values()])
            if count == last:
                return
            last = count
            await asyncio.sleep(AUDIT_SETTLE_STEP_SECONDS)

    async def collect_stats(self) -> None:
        """The audit drop counters of every process, before the servers stop."""
        metric_total = 0.0
        metric_seen = False
        attribute_total = 0
        for deployment in self.deployments.values():
            for client in deployment.clients:
                stats = (await client.get("/soak/stats")).json()
                attribute_total += stats["audit_dropped"] or 0
                self.report.audit_sink_failures += stats["audit_failures"] or 0
                exposition = (await client.get("/soak/metrics/")).text
                for family in text_string_to_metric_families(exposition):
                    if "audit" in family.name and "dropped" in family.name:
                        for sample in family.samples:
                            if sample.name.endswith("_total"):
                                metric_seen = True
                                metric_total += sample.value
        if metric_seen:
            self.report.audit_dropped_counted = int(metric_total)
            self.report.audit_dropped_source = "metric *audit*dropped*_total"
        else:
            self.report.audit_dropped_counted = attribute_total
            self.report.audit_dropped_source = (
                "AuditTrail.dropped (queue full only; no audit drop metric exists)"
            )

    async def check_storage(self) -> None:
        """As the database owner: every row belongs to the tenant whose request wrote it."""
        for strategy, deployment in self.deployments.items():
            owner_of = deployment.owner_of
            stored: dict[str, set[str]] = defaultdict(set)
            rows: list[tuple[str, str, str]] = []  # (storage holder, tenant_id, name)
            engine = create_async_engine(deployment.central_url, poolclass=NullPool)
            try:
                async with engine.connect() as conn:
                    if strategy == "row":
                        result = await conn.execute(text("SELECT tenant_id, name FROM items"))
                        rows += [(owner_of.get(t, "?"), t, name) for t, name in result]
                    elif strategy == "schema":
                        for identifier, (_, storage) in deployment.active.items():
                            result = await conn.execute(
                                text(f'SELECT tenant_id, name FROM "{storage}".items')
                            )
                            rows += [(identifier, t, name) for t, name in result]
            finally:
                await engine.dispose()
            if strategy == "database":
                for identifier, (_, storage) in deployment.active.items():
                    url = make_url(POSTGRES_URL).set(database=storage)
                    tenant_engine = create_async_engine(url, poolclass=NullPool)
                    try:
                        async with tenant_engine.connect() as conn:
                            result = await conn.execute(text("SELECT tenant_id, name FROM items"))
                            rows += [(identifier, t, name) for t, name in result]
                    finally:
                        await tenant_engine.dispose()
            for holder, tenant_id, name in rows:
                write = self.writes.get(name)
                if (
                    write is None
                    or write.strategy != strategy
                    or write.identifier != holder
                    or owner_of.get(tenant_id) != holder
                ):
                    self.report.foreign_rows.append(
                        f"{strategy}: {holder} holds {name} ({tenant_id})"
                    )
                stored[holder].add(name)
            for (write_strategy, identifier), markers in self.acknowledged.items():
                if write_strategy == strategy:
                    self.report.missing_writes += sorted(markers - stored[identifier])

    async def check_audit(self, refused: set[str]) -> None:
        """Audited requests (writes that reached the app) against the records written.

        A record counts once, in the central database of its own strategy; one in another
        strategy's database, or a second copy, is unexpected. Records still waiting in a spill
        file (written there when the database could not take them) are counted apart: kept, not
        lost.
        """
        written: Counter[str] = Counter()
        misplaced = 0
        for strategy, deployment in self.deployments.items():
            for path, _status in await self.audit_rows(deployment):
                marker = path.rsplit("/", 1)[-1]
                write = self.writes.get(marker)
                if write is not None and write.strategy != strategy:
                    misplaced += 1
                else:
                    written[marker] += 1
        spilled = self.spilled_markers()
        expected: set[str] = set()
        ambiguous: set[str] = set()
        for marker, write in self.writes.items():
            rid = marker.rsplit(".", 1)[-1]
            if write.status is None:
                ambiguous.add(marker)
            elif rid not in refused:
                expected.add(marker)
        self.report.audited_requests = len(expected)
        self.report.audit_records = sum(written.values())
        self.report.audit_spilled = len(spilled)
        self.report.audit_ambiguous = len(ambiguous)
        self.report.audit_missing = len(expected - set(written) - spilled)
        self.report.audit_unexpected = misplaced + sum(
            n - (1 if marker in expected or marker in ambiguous else 0)
            for marker, n in written.items()
        )

    def spilled_markers(self) -> set[str]:
        """Markers of the audit records left in the deployments' spill files, if any."""
        markers: set[str] = set()
        for path in self.work_dir.glob("audit-spill-*"):
            if path.is_file():
                markers |= set(re.findall(r"/items/([^\"/\s]+)", path.read_text(errors="replace")))
        return markers

    def read_events(self) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
        background: list[dict[str, Any]] = []
        for path in sorted(self.events_dir.glob("events-*.jsonl")):
            with path.open() as lines:
                for line in lines:
                    event = json.loads(line)
                    rid = event.get("rid")
                    if rid is None:
                        background.append(event)
                    else:
                        by_request[rid].append(event)
        return by_request, background

    def explain_server_errors(self, by_request: dict[str, list[dict[str, Any]]]) -> set[str]:
        """5xx by status and the exception the server recorded for each; returns the refused."""
        refused = set()
        for rid, events in by_request.items():
            if any(event["event"] == "refused" for event in events):
                refused.add(rid)
            for event in events:
                if event["event"] == "raised":
                    status = event.get("status")
                    if status is not None and status < 500:
                        self.report.raised_after_response[_exception_key(event["exc"])] += 1
                    elif len(self.report.samples_500) < SAMPLES:
                        self.report.samples_500.append(event["explained"])
                elif event["event"] == "log" and event["message"].startswith(AFTER_RESPONSE):
                    self.report.failed_after_response += 1
        for rid, status in self.server_errors.items():
            events = by_request.get(rid, [])
            self.report.errors_5xx[f"{status} {_explain(events)}"] += 1
            if status == 500:
                self.report.status_500 += 1
        return refused

    def summarise_latency(self) -> None:
        ordered = sorted(self.latencies)
        self.report.latency = {
            "p50": _quantile(ordered, 0.5),
            "p99": _quantile(ordered, 0.99),
            "max": ordered[-1] if ordered else None,
        }

    def summarise_recovery(self) -> None:
        by_kind: dict[str, list[Fault]] = defaultdict(list)
        for fault in self.faults:
            by_kind[fault.kind].append(fault)
            if fault.recovered is None:
                self.report.unrecovered.append(f"{fault.kind} {fault.strategy} {fault.target}")
        for kind, faults in by_kind.items():
            times = sorted(t for t in (f.recovery_seconds for f in faults) if t is not None)
            self.report.recovery[kind] = {
                "n": len(faults),
                "p50": _quantile(times, 0.5),
                "p95": _quantile(times, 0.95),
                "max": times[-1] if times else None,
                "unrecovered": len(faults) - len(times),
            }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def _without_names(message: str) -> str:
    """``message`` with quoted names, addresses and ports blanked, so messages group."""
    message = re.sub(r"'[^']*'", "'…'", message)
    message = re.sub(r"\b\d+(\.\d+){3}(:\d+)?\b", "…", message)
    return re.sub(r"0x[0-9a-f]+", "…", message)


def _exception_key(chain: list[str]) -> str:
    """``Outer <- Cause <- ...`` by class name: the grouping key of a recorded exception."""
    return " <- ".join(entry.split(":", 1)[0].rsplit(".", 1)[-1] for entry in chain) or "?"


def _explain(events: list[dict[str, Any]]) -> str:
    for kind in ("raised", "refused"):
        for event in events:
            if event["event"] == kind and event.get("exc"):
                return f"{kind}: {_exception_key(event['exc'])}"
    for event in events:
        if event["event"] == "log":
            if event.get("exc"):
                return f"logged: {_exception_key(event['exc'])}"
            return f"logged: {_without_names(event['message'])[:120]}"
    return "no exception recorded"


@asynccontextmanager
async def _work_dir(settings: SoakSettings) -> AsyncIterator[Path]:
    if settings.work_dir is not None:
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        yield settings.work_dir
        return
    with tempfile.TemporaryDirectory(prefix="tenancy-soak-") as folder:
        yield Path(folder)


async def run_soak(settings: SoakSettings) -> SoakReport:
    """Run the whole soak (set-up, traffic and faults, checks, clean-up) and return its report."""
    unknown = set(settings.strategies) - set(STRATEGIES)
    if unknown or not settings.strategies:
        raise ValueError(f"strategies must be among {STRATEGIES}, not {sorted(unknown)}")
    began = time.monotonic()
    async with _work_dir(settings) as work_dir, AsyncExitStack() as stack:
        redis_dir = work_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        redis = await stack.enter_async_context(PrivateRedis(snapshot_dir=redis_dir))
        soak = Soak(settings, redis, work_dir)
        stack.push_async_callback(soak.admin.dispose)
        await soak.drop_leftovers()
        # One exit stack per strategy, so the strategies are set up (and servers started) at once.
        stacks = [await stack.enter_async_context(AsyncExitStack()) for _ in settings.strategies]

        async def prepare(strategy: str, own: AsyncExitStack) -> None:
            soak.deployments[strategy] = await own.enter_async_context(soak.deployment(strategy))

        async with asyncio.TaskGroup() as group:
            for strategy, own in zip(settings.strategies, stacks, strict=True):
                group.create_task(prepare(strategy, own))
        async with AsyncExitStack() as running:
            server_stacks = [
                await running.enter_async_context(AsyncExitStack()) for _ in settings.strategies
            ]

            async def start(strategy: str, own: AsyncExitStack) -> None:
                await own.enter_async_context(soak.servers(soak.deployments[strategy]))

            async with asyncio.TaskGroup() as group:
                for strategy, own in zip(settings.strategies, server_stacks, strict=True):
                    group.create_task(start(strategy, own))
            started = time.monotonic()
            soak.report.phases["setup"] = started - began
            stop = asyncio.Event()
            injector = asyncio.create_task(soak.inject_faults(stop))
            try:
                await soak.send_traffic(started + settings.seconds)
            finally:
                stop.set()
                await injector
            soak.report.seconds = time.monotonic() - started
            soak.report.phases["traffic"] = soak.report.seconds
            await soak.serve_everyone_again()
            await soak.settle_audit()
            await soak.collect_stats()
        # The servers have stopped: their audit queues are drained, their event files complete.
        by_request, background = soak.read_events()
        refused = soak.explain_server_errors(by_request)
        for event in background:
            if event["event"] == "log":
                message = _without_names(event["message"])[:100]
                soak.report.background_warnings[f"{event['logger']}: {message}"] += 1
        await soak.check_audit(refused)
        await soak.check_storage()
        soak.summarise_recovery()
        soak.summarise_latency()
        soak.report.phases["after"] = time.monotonic() - started - soak.report.seconds
        return soak.report


def iter_strategies(value: str) -> Iterator[str]:
    for name in value.split(","):
        if name.strip():
            yield name.strip()

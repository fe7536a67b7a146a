"""``fastapi-tenancy doctor``: the running configuration against a production checklist.

Read-only: the doctor connects once to the central database, reads its connection limit, the
tenants (how many, and whether their storage fits the isolation strategy) and (with row-level
security on) the role and tenant tables' RLS settings, and creates nothing (not even the tenants
table). It also connects to every other configured server, Redis and the JWKS URL, and reports
each one's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_tenancy import _wiring
from fastapi_tenancy._secrets import redact_url, scrub
from fastapi_tenancy.adoption import UnownedRows, unowned_rows
from fastapi_tenancy.cli.checks import (
    CheckResult,
    Connection,
    ServerFacts,
    check_config,
    run_checks,
)
from fastapi_tenancy.cli.output import print_json
from fastapi_tenancy.cli.runtime import EXIT_FAILURE, EXIT_OK, Commands, add_command, load_config
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError, TenancyError
from fastapi_tenancy.isolation.placement import ServerPool
from fastapi_tenancy.isolation.rls import RlsProblem, find_problems
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.preflight import storage_mismatch
from fastapi_tenancy.store.sqlalchemy import SQLAlchemyTenantStore, tenants_table
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["probe", "register"]

PROBE_TIMEOUT_SECONDS = 5.0


def _workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if workers < 1:
        raise argparse.ArgumentTypeError("--workers must be at least 1")
    return workers


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    doctor = add_command(
        commands,
        "doctor",
        help="check the configuration against a production checklist",
        description="Check the running configuration (TENANCY_* variables, .env) and the central "
        "database against a production checklist. Exits 1 if any check fails.",
        common=common,
        handler=_doctor,
    )
    doctor.add_argument(
        "--workers",
        type=_workers,
        default=_workers(os.environ.get("WEB_CONCURRENCY", "1") or "1"),
        metavar="N",
        help="app processes that share the database (default: $WEB_CONCURRENCY or 1)",
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")


def _doctor(args: argparse.Namespace) -> int:
    results = diagnose(getattr(args, "database_url", None), args.workers)
    if args.json:
        print_json(
            {
                "ok": not any(result.status == "fail" for result in results),
                "checks": [result.as_dict() for result in results],
            }
        )
    else:
        for result in results:
            print(_line(result))
        counts = {
            status: sum(r.status == status for r in results) for status in ("ok", "warn", "fail")
        }
        print(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    return EXIT_FAILURE if any(result.status == "fail" for result in results) else EXIT_OK


def _line(result: CheckResult) -> str:
    line = f"{result.status:<4}  {result.name:<8}  {result.message}"
    if result.hint and result.status != "ok":
        line += f" (fix: {result.hint})"
    return line


def diagnose(database_url: str | None, workers: int) -> list[CheckResult]:
    """Load the config, probe its database, and run every check."""
    try:
        config = load_config(database_url)
    except ConfigurationError as exc:
        return [check_config(scrub(str(exc), [database_url]))]
    facts, servers = asyncio.run(_probe_all(config))
    return run_checks(config, workers, facts) + servers


async def _probe_all(config: TenancyConfig) -> tuple[ServerFacts, list[CheckResult]]:
    facts = await probe(config)
    servers = await probe_servers(config) if facts.reachable else []
    return facts, servers


# A server this full is reported (warn) before it refuses new tenants.
NEARLY_FULL = 0.9


async def probe_servers(config: TenancyConfig) -> list[CheckResult]:
    """One check per database server of the pool: reachable (timed), tenants against capacity.

    Also fails when tenants are recorded on a server that is no longer configured (their
    requests would fail). Nothing when there is no pool and no tenant names a server.
    """
    counts = await _tenants_per_server(config)
    pool = ServerPool(config.database_servers)
    strays = {name: n for name, n in counts.items() if name is not None and name not in pool.names}
    results = []
    if pool and counts.get(None):
        results.append(
            CheckResult(
                "servers", "ok", f"{counts[None]} tenants on the default server (none recorded)"
            )
        )
    pings = await asyncio.gather(*(_ping(config, s.url.get_secret_value()) for s in pool.servers))
    for server, ping in zip(pool.servers, pings, strict=True):
        used = counts.get(server.name, 0)
        usage = f"server {server.name}: {used}/{server.capacity} tenants"
        if ping.error is not None:
            results.append(CheckResult("servers", "fail", f"{usage}; {ping.error}", "start it"))
        elif used >= server.capacity:
            results.append(
                CheckResult(
                    "servers",
                    "warn",
                    f"{usage}, full: new tenants go elsewhere",
                    "raise its capacity or add a server",
                )
            )
        elif used >= NEARLY_FULL * server.capacity:
            results.append(
                CheckResult(
                    "servers", "warn", f"{usage}, nearly full", "raise its capacity or add a server"
                )
            )
        else:
            results.append(
                CheckResult("servers", "ok", f"{usage}, {(ping.seconds or 0) * 1000:.0f} ms")
            )
    for name, n in sorted(strays.items()):
        results.append(
            CheckResult(
                "servers",
                "fail",
                f"{n} tenants are on server {name!r}, which TENANCY_DATABASE_SERVERS does not "
                "list: their requests fail",
                f"add {name!r} back to TENANCY_DATABASE_SERVERS",
            )
        )
    return results


async def _tenants_per_server(config: TenancyConfig) -> dict[str | None, int]:
    engine = _wiring.central_engine(config, null_pool=True, echo=False)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            async with engine.connect() as conn:
                has_table = await conn.run_sync(
                    lambda sync: inspect(sync).has_table(tenants_table.name)
                )
            if not has_table:
                return {}
            return await SQLAlchemyTenantStore(engine).count_by_server()
    finally:
        await engine.dispose()


async def _ping(config: TenancyConfig, url: str) -> Connection:
    """Connect to a server of the pool once, timed."""
    engine = _wiring.central_engine(config, url, null_pool=True, echo=False)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return Connection(error=_unreachable(url, exc))
    finally:
        await engine.dispose()
    return Connection(seconds=time.perf_counter() - started)


async def probe(config: TenancyConfig) -> ServerFacts:
    """Connect once: is the database up, what is its ``max_connections``, how many tenants."""
    # Echo would print the probe's statements into the report, and into --json output.
    quiet = config.model_copy(update={"database_echo": False})
    try:
        tenancy = Tenancy(quiet)
    except ConfigurationError as exc:
        return ServerFacts(reachable=False, error=scrub(str(exc), [config.database_url]))
    redis, jwks = await asyncio.gather(_probe_redis(config), _probe_jwks(config))
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            async with tenancy.engine.connect() as conn:
                seconds = time.perf_counter() - started
                max_connections = await _max_connections(conn, config.database_backend)
                has_table = await conn.run_sync(
                    lambda sync: inspect(sync).has_table(tenants_table.name)
                )
                rls_problems = await _rls_problems(conn, config)
            unowned = await _unowned(tenancy, config)
            # The store reads without initialize(): the doctor never creates the table.
            tenants = await tenancy.store.list(include_deleted=True) if has_table else []
    except Exception as exc:
        return ServerFacts(
            reachable=False, error=_unreachable(config.database_url, exc), redis=redis, jwks=jwks
        )
    finally:
        await tenancy.close()
    return ServerFacts(
        reachable=True,
        max_connections=max_connections,
        tenant_count=sum(tenant.status is not TenantStatus.DELETED for tenant in tenants),
        rls_problems=rls_problems,
        seconds=seconds,
        storage_mismatch=storage_mismatch(config.isolation_strategy, tenants),
        tenant_identifiers=tuple(tenant.identifier for tenant in tenants),
        redis=redis,
        jwks=jwks,
        unowned=unowned,
    )


async def _unowned(tenancy: Tenancy, config: TenancyConfig) -> tuple[UnownedRows, ...] | None:
    """Row isolation: the tenant tables with rows without a tenant or a nullable column."""
    if config.isolation_strategy != "row":
        return ()
    try:
        tables = TenantTables(config.tenant_metadata)
        return tuple(await unowned_rows(tenancy.engine, tables))
    except ConfigurationError:
        return None  # the storage check and start-up report the metadata


async def _probe_redis(config: TenancyConfig) -> Connection | None:
    """PING the configured Redis once, timed; ``None`` when there is none."""
    if config.redis_url is None:
        return None
    url = config.redis_url.get_secret_value()
    try:
        from fastapi_tenancy._redis import redact_redis_url, redis_client

        client = redis_client(url, timeout=PROBE_TIMEOUT_SECONDS)
    except ImportError:
        return Connection(
            error="redis-py is not installed: pip install 'fastapi-tenancy-kit[redis]'"
        )
    except ConfigurationError as exc:  # redis-py is missing
        return Connection(error=str(exc))
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await client.ping()
    except Exception as exc:
        return Connection(error=_unreachable(url, exc, shown=redact_redis_url(url)))
    finally:
        await client.aclose()
    return Connection(seconds=time.perf_counter() - started)


async def _probe_jwks(config: TenancyConfig) -> Connection | None:
    """Fetch the configured JWKS once, timed; ``None`` when keys do not come from one."""
    keys = _wiring.signing_keys(config)
    if keys is None:
        return None
    started = time.perf_counter()
    try:
        await keys.start()
        await keys.close()
    except TenancyError as exc:
        return Connection(error=str(exc))
    return Connection(seconds=time.perf_counter() - started)


async def _rls_problems(
    conn: AsyncConnection, config: TenancyConfig
) -> tuple[RlsProblem, ...] | None:
    if not config.row_level_security:
        return None
    try:
        tables = TenantTables(config.tenant_metadata).scoped_tables_children_first()
    except ConfigurationError as exc:
        return (RlsProblem(str(exc), "correct TENANCY_TENANT_METADATA"),)
    return tuple(await conn.run_sync(find_problems, tables))


async def _max_connections(conn: AsyncConnection, backend: str) -> int | None:
    if backend == "postgresql":
        value: Any = await conn.scalar(text("SHOW max_connections"))
    elif backend in ("mysql", "mariadb"):
        value = await conn.scalar(text("SELECT @@max_connections"))
    else:
        return None
    return int(value)


def _unreachable(url: str, exc: Exception, *, shown: str | None = None) -> str:
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {PROBE_TIMEOUT_SECONDS:g}s"
    elif isinstance(exc, TenancyError):
        return scrub(str(exc), [url])
    else:
        # The driver's own error; SQLAlchemy's wrapper would add the statement and parameters.
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = f"{type(cause).__name__}: {cause}"
    return scrub(f"{shown or redact_url(url)} is unreachable: {reason}", [url])

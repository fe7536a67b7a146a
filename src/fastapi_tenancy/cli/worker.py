"""``fastapi-tenancy worker``: provision pending tenants until stopped (SIGTERM or Ctrl-C)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi_tenancy.cli.output import print_error
from fastapi_tenancy.cli.runtime import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    add_command,
    alembic_config,
    positive_float,
    positive_int,
    run_with_tenancy,
)
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.preflight import missing_tables
from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.worker import ProvisioningWorker

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = ["register"]


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    worker = add_command(
        commands,
        "worker",
        help="provision pending tenants",
        description="Claim pending tenants in batches, create their storage and mark them "
        "active. Any number of workers may run at once; each tenant is provisioned by one.",
        common=common,
        handler=_worker,
    )
    worker.add_argument("--batch-size", type=positive_int, default=10, metavar="N")
    worker.add_argument(
        "--poll-timeout-seconds",
        type=positive_float,
        default=5.0,
        metavar="S",
        help="how long to wait before looking again when nothing is pending",
    )
    worker.add_argument(
        "--max-attempts",
        type=positive_int,
        default=3,
        metavar="N",
        help="attempts before a tenant is marked failed",
    )
    worker.add_argument(
        "--stale-after-seconds",
        type=positive_float,
        default=600.0,
        metavar="S",
        help="reclaim a tenant left provisioning this long by a worker that died",
    )
    worker.add_argument(
        "--exit-when-idle", action="store_true", help="stop once nothing is pending"
    )
    worker.add_argument(
        "--migrate",
        metavar="ALEMBIC_INI",
        help="migrate each tenant to head with this Alembic config before activating it "
        "(for tenant tables that Alembic owns)",
    )


def _worker(args: argparse.Namespace) -> int:
    script = None
    if args.migrate:
        try:
            script = alembic_config(args.migrate, "--migrate")
        except ConfigurationError as exc:
            print_error(str(exc))
            return EXIT_FAILURE

    async def work(tenancy: Tenancy) -> int:
        if script is None:
            _refuse_tenants_without_tables(tenancy.config)
        prepare = _migration_step(tenancy, script) if script is not None else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        worker = ProvisioningWorker(
            tenancy,
            batch_size=args.batch_size,
            poll_timeout=args.poll_timeout_seconds,
            max_attempts=args.max_attempts,
            stale_after=args.stale_after_seconds,
            prepare=prepare,
        )
        result = await worker.run(stop=stop, exit_when_idle=args.exit_when_idle)
        print(f"provisioned={result.provisioned} retried={result.retried} failed={result.failed}")
        return EXIT_OK

    return run_with_tenancy(args, work)


def _refuse_tenants_without_tables(config: TenancyConfig) -> None:
    """Without ``--migrate``, provisioning must create the tables itself, from the metadata."""
    problem = missing_tables(config)
    if problem is not None:
        raise ConfigurationError(
            f"cannot provision tenants: {problem} (with Alembic, pass --migrate ALEMBIC_INI too)"
        )


def _migration_step(tenancy: Tenancy, script: AlembicConfig) -> Callable[[Tenant], Awaitable[None]]:
    from fastapi_tenancy.migrations import migrate_tenant

    async def migrate(tenant: Tenant) -> None:
        await migrate_tenant(tenancy, script, tenant)

    return migrate

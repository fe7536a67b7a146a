"""The SaaS example's worker: provisions signed-up tenants and migrates their tables.

    python -m examples.saas.worker                  # until SIGTERM or Ctrl-C
    python -m examples.saas.worker --exit-when-idle

It is `fastapi-tenancy worker` (`ProvisioningWorker`) plus one hook: when a tenant becomes active,
Alembic brings its new schema to head at once, so a tenant is usable a moment after it is
provisioned without a separate ``fastapi-tenancy migrate upgrade``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from examples.saas.settings import alembic_config, tenancy_config
from fastapi_tenancy import Tenancy
from fastapi_tenancy.events import TenantChanged
from fastapi_tenancy.migrations import upgrade
from fastapi_tenancy.worker import BatchResult, ProvisioningWorker

logger = logging.getLogger("examples.saas.worker")


async def migrate_when_provisioned(tenancy: Tenancy, event: TenantChanged) -> None:
    if event.action != "provision":
        return
    report = await upgrade(tenancy, alembic_config(), identifiers=[event.tenant.identifier])
    for migration in report.migrations:
        if migration.outcome == "failed":
            # The tenant stays active without tables until `migrate upgrade` succeeds for it.
            logger.error("migrating %s failed: %s", migration.identifier, migration.error)


async def work(*, exit_when_idle: bool) -> BatchResult:
    async with Tenancy(tenancy_config()) as tenancy:
        tenancy.hooks.subscribe(
            TenantChanged, lambda event: migrate_when_provisioned(tenancy, event)
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        worker = ProvisioningWorker(tenancy, poll_timeout=2.0)
        return await worker.run(stop=stop, exit_when_idle=exit_when_idle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--exit-when-idle", action="store_true", help="stop once none is pending")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(work(exit_when_idle=args.exit_when_idle))
    print(f"provisioned={result.provisioned} retried={result.retried} failed={result.failed}")


if __name__ == "__main__":
    main()

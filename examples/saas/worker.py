"""The SaaS example's worker: provisions signed-up tenants and migrates their tables.

    python -m examples.saas.worker                  # until SIGTERM or Ctrl-C
    python -m examples.saas.worker --exit-when-idle

It is `fastapi-tenancy worker --migrate alembic.ini`: `ProvisioningWorker` with a ``prepare`` step
in which Alembic brings each new schema to head *before* the tenant is activated, so no request
ever reaches a tenant without its tables, and no separate ``fastapi-tenancy migrate upgrade`` is
needed for new tenants. A failed migration removes the new schema and the tenant is retried.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from examples.saas.settings import alembic_config, tenancy_config
from fastapi_tenancy import Tenancy, Tenant
from fastapi_tenancy.migrations import migrate_tenant
from fastapi_tenancy.worker import BatchResult, ProvisioningWorker


async def work(*, exit_when_idle: bool) -> BatchResult:
    async with Tenancy(tenancy_config()) as tenancy:
        script = alembic_config()

        async def migrate(tenant: Tenant) -> None:
            await migrate_tenant(tenancy, script, tenant)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        worker = ProvisioningWorker(tenancy, poll_timeout=2.0, prepare=migrate)
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

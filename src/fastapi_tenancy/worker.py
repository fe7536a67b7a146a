"""The provisioning worker: turns ``pending`` tenants into ``active`` ones, off the request path.

Several workers may run at once, in one process or many: each claim is a conditional write in the
store, so every tenant is provisioned by exactly one of them. A tenant whose worker died while
provisioning it is claimed again once ``stale_after`` seconds have passed.

    fastapi-tenancy worker --batch-size 10      # reads TENANCY_* like the app
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["BatchResult", "ProvisioningWorker"]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did: tenants made active, put back for a retry, and given up on."""

    provisioned: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def claimed(self) -> int:
        return self.provisioned + self.retried + self.failed


class ProvisioningWorker:
    """Claims pending tenants in batches and provisions them.

    ``prepare`` runs for each tenant once its storage exists and before it becomes active, e.g.
    to migrate it to head (`fastapi_tenancy.migrations.migrate_tenant`); when it raises, the
    attempt counts as failed and the tenant is retried.

    Example::

        async with Tenancy(config) as tenancy:
            await ProvisioningWorker(tenancy, batch_size=20).run(exit_when_idle=True)
    """

    def __init__(
        self,
        tenancy: Tenancy,
        *,
        batch_size: int = 10,
        poll_timeout: float = 5.0,
        max_attempts: int = 3,
        stale_after: float = 600.0,
        prepare: Callable[[Tenant], Awaitable[None]] | None = None,
    ) -> None:
        if batch_size < 1 or max_attempts < 1 or poll_timeout <= 0 or stale_after <= 0:
            raise ValueError("batch_size and max_attempts must be >= 1, timeouts positive")
        self._tenancy = tenancy
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._max_attempts = max_attempts
        self._stale_after = timedelta(seconds=stale_after)
        self._prepare = prepare

    async def run_once(self) -> BatchResult:
        """Claim and provision one batch; an empty result means nothing was pending."""
        await self._tenancy.start()
        claimed = await self._tenancy.store.claim_for_provisioning(
            limit=self._batch_size, stale_before=datetime.now(UTC) - self._stale_after
        )
        outcomes = [
            await self._tenancy.lifecycle.provision_claimed(
                tenant, max_attempts=self._max_attempts, prepare=self._prepare
            )
            for tenant in claimed
        ]
        statuses = [tenant.status for tenant in outcomes]
        return BatchResult(
            provisioned=statuses.count(TenantStatus.ACTIVE),
            retried=statuses.count(TenantStatus.PENDING),
            failed=statuses.count(TenantStatus.FAILED),
        )

    async def run(
        self, *, stop: asyncio.Event | None = None, exit_when_idle: bool = False
    ) -> BatchResult:
        """Work until ``stop`` is set (or, with ``exit_when_idle``, until nothing is pending)."""
        stop = stop or asyncio.Event()
        total = BatchResult()
        while not stop.is_set():
            batch = await self.run_once()
            total = BatchResult(
                provisioned=total.provisioned + batch.provisioned,
                retried=total.retried + batch.retried,
                failed=total.failed + batch.failed,
            )
            if batch.claimed:
                continue
            if exit_when_idle:
                break
            try:
                await asyncio.wait_for(stop.wait(), self._poll_timeout)
            except TimeoutError:
                pass
        return total

"""The provisioning worker: turns ``pending`` tenants into ``active`` ones, off the request path.

Several workers may run at once, in one process or many: each claim is a conditional write in the
store, so every tenant is provisioned by exactly one of them. A tenant whose worker died while
provisioning it is claimed again once ``stale_after`` seconds have passed.

An outage (the central database, or a tenant's server, unreachable) never ends the worker: it
waits, doubling the wait from ``backoff`` up to ``max_backoff`` seconds, logs the outage once and
its end once, and hands every tenant of the interrupted batch back to ``pending`` as soon as the
store answers again, so none stays ``provisioning`` until ``stale_after``. Provisioning is safe to
repeat: storage an interrupted attempt made for a tenant carries that tenant's mark and is reused.

    fastapi-tenancy worker --batch-size 10      # reads TENANCY_* like the app
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi_tenancy.exceptions import InvalidTransition
from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["BatchResult", "ProvisioningWorker", "is_outage"]

logger = logging.getLogger("fastapi_tenancy.worker")


# Whether a failed attempt means storage could not be reached (retry later) rather than a bug or
# a bad tenant: the library's one classifier, under the name this module has always exported.
is_outage = is_unavailable


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
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        if batch_size < 1 or max_attempts < 1 or min(poll_timeout, stale_after, backoff) <= 0:
            raise ValueError("batch_size and max_attempts must be >= 1, timeouts positive")
        if max_backoff < backoff:
            raise ValueError("max_backoff must be at least backoff")
        self._tenancy = tenancy
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._max_attempts = max_attempts
        self._stale_after = timedelta(seconds=stale_after)
        self._prepare = prepare
        self._backoff = backoff
        self._max_backoff = max_backoff
        # Claims of a batch that an outage interrupted: (tenant as claimed, attempt started).
        self._interrupted: list[tuple[Tenant, bool]] = []
        self.outages = 0

    async def run_once(self) -> BatchResult:
        """Claim and provision one batch; an empty result means nothing was pending.

        When it raises (an outage, most likely), the tenants of the batch it did not finish are
        handed back to ``pending`` by the next call, or at once if the store still answers.
        """
        await self._tenancy.start()
        await self._release_interrupted()
        claimed = await self._tenancy.store.claim_for_provisioning(
            limit=self._batch_size, stale_before=datetime.now(UTC) - self._stale_after
        )
        outcomes: list[Tenant] = []
        for index, tenant in enumerate(claimed):
            try:
                outcomes.append(
                    await self._tenancy.lifecycle.provision_claimed(
                        tenant, max_attempts=self._max_attempts, prepare=self._prepare
                    )
                )
            except InvalidTransition as exc:
                # The claim went stale and another worker (or an operator) changed the tenant:
                # it is theirs now, and this worker moves on.
                logger.warning("tenant %r changed meanwhile: %s", tenant.identifier, exc)
            except BaseException:
                self._interrupted = [(tenant, True)] + [(t, False) for t in claimed[index + 1 :]]
                with contextlib.suppress(Exception):
                    await self._release_interrupted()
                raise
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
        delay = self._backoff
        while not stop.is_set():
            try:
                batch = await self.run_once()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if delay == self._backoff:
                    self.outages += 1
                    logger.warning(
                        "provisioning paused: storage unavailable (%s); retrying with backoff up "
                        "to %.0f s",
                        exc,
                        self._max_backoff,
                    )
                await _wait(stop, delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            if delay != self._backoff:
                logger.warning("provisioning resumed: storage answers again")
                delay = self._backoff
            total = BatchResult(
                provisioned=total.provisioned + batch.provisioned,
                retried=total.retried + batch.retried,
                failed=total.failed + batch.failed,
            )
            if batch.claimed:
                continue
            if exit_when_idle:
                break
            await _wait(stop, self._poll_timeout)
        return total

    async def _release_interrupted(self) -> None:
        while self._interrupted:
            tenant, attempted = self._interrupted[0]
            await self._tenancy.lifecycle.release(tenant, attempted=attempted)
            del self._interrupted[0]


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

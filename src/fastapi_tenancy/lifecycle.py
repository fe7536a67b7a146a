"""Tenant lifecycle: create, suspend, activate, soft delete, restore and purge.

Off the request path: the middleware never imports this module. Each change is stored first, then
this process's lookup cache forgets the tenant (so it stops or starts serving at once), then a
`TenantChanged` event goes to the hooks. Purging follows the order mark, invalidate, drain, destroy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from fastapi_tenancy.events import Hooks, LifecycleAction, TenantChanged
from fastapi_tenancy.exceptions import InvalidTransition, ServiceUnavailable, TenantNotFound
from fastapi_tenancy.inflight import InFlight
from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import Tenant, TenantStatus, validate_identifier
from fastapi_tenancy.store.base import TenantStore

logger = logging.getLogger("fastapi_tenancy.lifecycle")

__all__ = ["TRANSITIONS", "TenantLifecycle"]

_S = TenantStatus

# action -> (statuses it may start from, status it ends in). Any other move raises.
TRANSITIONS: dict[LifecycleAction, tuple[frozenset[TenantStatus], TenantStatus]] = {
    "start_provisioning": (frozenset({_S.PENDING}), _S.PROVISIONING),
    "provision": (frozenset({_S.PROVISIONING}), _S.ACTIVE),
    "retry": (frozenset({_S.PROVISIONING}), _S.PENDING),
    "fail": (frozenset({_S.PROVISIONING}), _S.FAILED),
    "suspend": (frozenset({_S.ACTIVE}), _S.SUSPENDED),
    "activate": (frozenset({_S.SUSPENDED}), _S.ACTIVE),
    "delete": (frozenset({_S.ACTIVE, _S.SUSPENDED}), _S.DELETED),
    "restore": (frozenset({_S.DELETED}), _S.ACTIVE),
}


class TenantLifecycle:
    """Lifecycle operations over one store, isolation strategy, lookup and set of hooks."""

    def __init__(
        self,
        store: TenantStore,
        isolation: IsolationStrategy,
        lookup: TenantLookup,
        *,
        hooks: Hooks,
        inflight: InFlight,
        soft_delete: bool,
        drain_timeout: float,
    ) -> None:
        self._store = store
        self._isolation = isolation
        self._lookup = lookup
        self._hooks = hooks
        self._inflight = inflight
        self._soft_delete = soft_delete
        self._drain_timeout = drain_timeout

    async def create(
        self,
        identifier: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        database_url: str | None = None,
        provision: bool = True,
    ) -> Tenant:
        tenant = Tenant(
            identifier=validate_identifier(identifier),
            name=name if name is not None else identifier,
            status=_S.PENDING,
            metadata=dict(metadata or {}),
            database_url=SecretStr(database_url) if database_url is not None else None,
        )
        # The physical name is recorded before any DDL, so storage is never orphaned unnamed.
        pending = await self._store.add(self._isolation.assign_storage(tenant))
        await self._lookup.invalidate(identifier)
        await self._hooks.emit(TenantChanged(action="create", tenant=pending, previous=None))
        if not provision:
            return pending  # a provisioning worker takes it from here
        provisioning = await self._move(pending, "start_provisioning")
        try:
            await self._isolation.provision(provisioning)
        except BaseException:
            # The record this call created goes too, so a retry starts from nothing.
            await self._store.delete(pending.id)
            await self._lookup.invalidate(identifier)
            raise
        return await self._move(provisioning, "provision")

    async def provision_claimed(
        self,
        tenant: Tenant,
        *,
        max_attempts: int,
        prepare: Callable[[Tenant], Awaitable[None]] | None = None,
    ) -> Tenant:
        """Provision a tenant a worker claimed; on failure retry later, or give up for good.

        ``prepare`` (such as a migration to head) runs once the storage exists and before the
        tenant is activated, so no request ever reaches a half-made tenant. The isolation strategy
        leaves no half-made storage behind a failed provision, and storage made by an attempt
        whose ``prepare`` failed is removed, so a retry starts clean.
        """
        try:
            await self._isolation.provision(tenant)
        except Exception:
            logger.warning("provisioning tenant %r failed", tenant.identifier, exc_info=True)
            return await self._move(tenant, self._after_failure(tenant, max_attempts))
        if prepare is not None:
            try:
                await prepare(tenant)
            except Exception:
                logger.warning(
                    "preparing tenant %r failed; its new storage is removed",
                    tenant.identifier,
                    exc_info=True,
                )
                await self._isolation.purge(tenant)
                return await self._move(tenant, self._after_failure(tenant, max_attempts))
        return await self._move(tenant, "provision")

    @staticmethod
    def _after_failure(tenant: Tenant, max_attempts: int) -> LifecycleAction:
        return "fail" if tenant.provisioning_attempts >= max_attempts else "retry"

    async def get(self, identifier: str) -> Tenant | None:
        return await self._store.get_by_identifier(validate_identifier(identifier))

    async def require(self, identifier: str) -> Tenant:
        tenant = await self.get(identifier)
        if tenant is None:
            raise TenantNotFound(f"no tenant {identifier!r}")
        return tenant

    async def transition(self, identifier: str, action: LifecycleAction) -> Tenant:
        """Apply ``action``; repeating one that already took effect is a no-op."""
        tenant = await self.require(identifier)
        if tenant.status is TRANSITIONS[action][1]:
            return tenant
        return await self._move(tenant, action)

    async def delete(self, identifier: str) -> Tenant:
        deleted = await self.transition(identifier, "delete")
        if not self._soft_delete:
            await self.purge(identifier)
        return deleted

    async def purge(self, identifier: str) -> None:
        tenant = await self.require(identifier)
        if tenant.status is not _S.DELETED:
            raise InvalidTransition(
                f"cannot purge tenant {identifier!r}: delete it first (it is {tenant.status.value})"
            )
        await self._lookup.invalidate(identifier)
        try:
            async with asyncio.timeout(self._drain_timeout):
                await self._inflight.drained(tenant.id)
        except TimeoutError:
            raise ServiceUnavailable(
                f"tenant {identifier!r} still has work running after {self._drain_timeout}s; "
                "nothing was purged, try again"
            ) from None
        await self._isolation.purge(tenant)
        await self._store.delete(tenant.id)
        await self._lookup.invalidate(identifier)
        await self._hooks.emit(TenantChanged(action="purge", tenant=tenant, previous=_S.DELETED))

    async def _move(self, tenant: Tenant, action: LifecycleAction) -> Tenant:
        sources, target = TRANSITIONS[action]
        if tenant.status not in sources:
            raise InvalidTransition(
                f"cannot {action} tenant {tenant.identifier!r}: it is {tenant.status.value}"
            )
        deleted_at = datetime.now(UTC) if target is _S.DELETED else None
        updated = await self._store.update(
            tenant.model_copy(update={"status": target, "deleted_at": deleted_at})
        )
        await self._lookup.invalidate(tenant.identifier)
        await self._hooks.emit(TenantChanged(action=action, tenant=updated, previous=tenant.status))
        return updated

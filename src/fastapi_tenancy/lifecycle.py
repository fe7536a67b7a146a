"""Tenant lifecycle: create, suspend, activate, soft delete, restore and purge.

Off the request path: the middleware never imports this module. Every change goes to the store
first and then invalidates the lookup cache, so this process stops serving a suspended or deleted
tenant at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from fastapi_tenancy.exceptions import InvalidTransition, TenantNotFound
from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import Tenant, TenantStatus, validate_identifier
from fastapi_tenancy.store.base import TenantStore

__all__ = ["TenantLifecycle"]

_ACTIVE, _SUSPENDED, _DELETED = TenantStatus.ACTIVE, TenantStatus.SUSPENDED, TenantStatus.DELETED

# action -> (statuses it may start from, status it ends in)
TRANSITIONS: dict[str, tuple[frozenset[TenantStatus], TenantStatus]] = {
    "suspend": (frozenset({_ACTIVE}), _SUSPENDED),
    "activate": (frozenset({_SUSPENDED}), _ACTIVE),
    "delete": (frozenset({_ACTIVE, _SUSPENDED}), _DELETED),
    "restore": (frozenset({_DELETED}), _ACTIVE),
}


class TenantLifecycle:
    """Lifecycle operations over one store, isolation strategy and lookup."""

    def __init__(
        self,
        store: TenantStore,
        isolation: IsolationStrategy,
        lookup: TenantLookup,
        *,
        soft_delete: bool,
    ) -> None:
        self._store = store
        self._isolation = isolation
        self._lookup = lookup
        self._soft_delete = soft_delete

    async def create(
        self,
        identifier: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        database_url: str | None = None,
    ) -> Tenant:
        tenant = Tenant(
            identifier=validate_identifier(identifier),
            name=name if name is not None else identifier,
            metadata=dict(metadata or {}),
            database_url=SecretStr(database_url) if database_url is not None else None,
        )
        # The physical name is recorded before any DDL, so storage is never orphaned unnamed.
        stored = await self._store.add(self._isolation.assign_storage(tenant))
        try:
            await self._isolation.provision(stored)
        except BaseException:
            # The record this call created goes too, so a retry starts from nothing.
            await self._store.delete(stored.id)
            raise
        finally:
            await self._lookup.invalidate(identifier)
        return stored

    async def get(self, identifier: str) -> Tenant | None:
        return await self._store.get_by_identifier(validate_identifier(identifier))

    async def require(self, identifier: str) -> Tenant:
        tenant = await self.get(identifier)
        if tenant is None:
            raise TenantNotFound(f"no tenant {identifier!r}")
        return tenant

    async def transition(self, identifier: str, action: str) -> Tenant:
        """Apply ``action`` (a key of ``TRANSITIONS``); repeating a finished action is a no-op."""
        sources, target = TRANSITIONS[action]
        tenant = await self.require(identifier)
        if tenant.status is target:
            return tenant
        if tenant.status not in sources:
            raise InvalidTransition(
                f"cannot {action} tenant {identifier!r}: it is {tenant.status.value}"
            )
        deleted_at = datetime.now(UTC) if target is _DELETED else None
        updated = await self._store.update(
            tenant.model_copy(update={"status": target, "deleted_at": deleted_at})
        )
        await self._lookup.invalidate(identifier)
        return updated

    async def delete(self, identifier: str) -> Tenant:
        deleted = await self.transition(identifier, "delete")
        if not self._soft_delete:
            await self.purge(identifier)
        return deleted

    async def purge(self, identifier: str) -> None:
        tenant = await self.require(identifier)
        if tenant.status is not _DELETED:
            raise InvalidTransition(
                f"cannot purge tenant {identifier!r}: delete it first (it is {tenant.status.value})"
            )
        await self._lookup.invalidate(identifier)
        await self._isolation.purge(tenant)
        await self._store.delete(tenant.id)
        await self._lookup.invalidate(identifier)

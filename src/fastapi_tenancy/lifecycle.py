"""Tenant lifecycle: create, update, suspend, activate, soft delete, restore, retry and purge.

Off the request path: the middleware never imports this module. Each change is stored first, then
the tenant is invalidated in every process the cache reaches (so it stops or starts serving at
once), then a `TenantChanged` event goes to the hooks.

Every change is a compare-and-set on the record as it was read (`TenantStore.update_if_unchanged`):
of two concurrent changes one wins and the other raises `InvalidTransition`, never both. Purging
follows the order invalidate, drain, mark ``purging`` (only if the record is still the deleted one
that was read: a restore that won the race stops the purge), destroy, remove the record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.domains import Domain, DomainChanged
from fastapi_tenancy.exceptions import (
    ConfigurationError,
    InvalidTransition,
    ServiceUnavailable,
    TenantAlreadyExists,
    TenantNotFound,
)
from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.inflight import InFlight
from fastapi_tenancy.isolation.placement import ServerPool, place
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import Tenant, TenantStatus, later_than, validate_identifier
from fastapi_tenancy.observe.events import Hooks, LifecycleAction, TenantChanged
from fastapi_tenancy.store.base import DomainStore, TenantStore

logger = logging.getLogger("fastapi_tenancy.lifecycle")

__all__ = ["TRANSITIONS", "TenantLifecycle"]

# action -> (statuses it may start from, status it ends in). Any other move raises.
TRANSITIONS: dict[LifecycleAction, tuple[frozenset[TenantStatus], TenantStatus]] = {
    "start_provisioning": (frozenset({TenantStatus.PENDING}), TenantStatus.PROVISIONING),
    "provision": (frozenset({TenantStatus.PROVISIONING}), TenantStatus.ACTIVE),
    # Back to pending: a worker's attempt failed or was interrupted, or an operator retries a
    # tenant whose provisioning failed for good.
    "retry": (frozenset({TenantStatus.PROVISIONING, TenantStatus.FAILED}), TenantStatus.PENDING),
    "fail": (frozenset({TenantStatus.PROVISIONING}), TenantStatus.FAILED),
    "suspend": (frozenset({TenantStatus.ACTIVE}), TenantStatus.SUSPENDED),
    "activate": (frozenset({TenantStatus.SUSPENDED}), TenantStatus.ACTIVE),
    "delete": (
        frozenset({TenantStatus.ACTIVE, TenantStatus.SUSPENDED, TenantStatus.FAILED}),
        TenantStatus.DELETED,
    ),
    "restore": (frozenset({TenantStatus.DELETED}), TenantStatus.ACTIVE),
    # The write freeze of a move or restore (`fastapi_tenancy.transfer`); finishing also rolls
    # an interrupted move back.
    "start_move": (frozenset({TenantStatus.ACTIVE}), TenantStatus.MOVING),
    "finish_move": (frozenset({TenantStatus.MOVING}), TenantStatus.ACTIVE),
}


@runtime_checkable
class OneTransactionStore(Protocol):
    """A store that can insert a record and run its storage's DDL in one transaction."""

    @property
    def engine(self) -> AsyncEngine: ...

    async def add_with_storage(self, tenant: Tenant, script: str) -> bool: ...


@runtime_checkable
class ScriptedStorage(Protocol):
    """An isolation strategy whose storage is a DDL script in the central database."""

    async def storage_script(self, tenant: Tenant, engine: AsyncEngine) -> str | None: ...


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
        servers: ServerPool | None = None,
    ) -> None:
        self._store = store
        self._isolation = isolation
        self._lookup = lookup
        self._hooks = hooks
        self._inflight = inflight
        self._soft_delete = soft_delete
        self._drain_timeout = drain_timeout
        self._servers = servers if servers is not None else ServerPool()

    async def create(
        self,
        identifier: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        database_url: str | None = None,
        provision: bool = True,
        server: str | None = None,
    ) -> Tenant:
        if database_url is not None:
            await self._refuse_shared_database(database_url)
        tenant = Tenant(
            identifier=validate_identifier(identifier),
            name=name if name is not None else identifier,
            status=TenantStatus.PENDING,
            metadata=dict(metadata or {}),
            database_url=SecretStr(database_url) if database_url is not None else None,
        )
        # The physical name is recorded before any DDL, so storage is never orphaned unnamed.
        # It is placed on a server of the pool (if any) as it is inserted: `isolation.placement`.
        tenant = self._isolation.assign_storage(tenant)
        if not provision:
            pending = await place(self._store, tenant, self._servers, server)
            await self._lookup.invalidate(identifier)
            await self._hooks.emit(TenantChanged(action="create", tenant=pending, previous=None))
            return pending  # a provisioning worker takes it from here
        if server is None and not self._servers and tenant.database_url is None:
            created = await self._create_in_one_transaction(tenant)
            if created is not None:
                return created
        # Step by step: the record is inserted already ``provisioning``, one transaction
        # (and one WAL flush) where pending-then-provisioning took two, and no worker can claim
        # it in between. A process that dies from here on leaves it provisioning, which a
        # worker or `retry` reclaims once stale, as for a worker's own claim. The events are
        # those of the two steps, in order.
        provisioning = await place(
            self._store,
            tenant.model_copy(update={"status": TenantStatus.PROVISIONING}),
            self._servers,
            server,
        )
        pending = provisioning.model_copy(update={"status": TenantStatus.PENDING})
        await self._lookup.invalidate(identifier)
        await self._hooks.emit(TenantChanged(action="create", tenant=pending, previous=None))
        await self._hooks.emit(
            TenantChanged(
                action="start_provisioning", tenant=provisioning, previous=TenantStatus.PENDING
            )
        )
        try:
            await self._isolation.provision(provisioning)
        except BaseException:
            # The record this call created goes too, so a retry starts from nothing.
            await self._store.delete(pending.id)
            await self._lookup.invalidate(identifier)
            raise
        return await self._move(provisioning, "provision")

    async def _create_in_one_transaction(self, tenant: Tenant) -> Tenant | None:
        """Insert ``tenant`` already ``active`` together with its storage; ``None``: cannot.

        When the isolation strategy's storage is DDL in the store's own database (schema
        isolation on PostgreSQL), the record and the DDL commit in one transaction, one round
        trip: a crash leaves both or neither, and the tenant is never ``active`` without its
        storage. The events are those of the three steps it replaces (``create``,
        ``start_provisioning``, ``provision``), in order, once it is stored. Any failure (a taken
        identifier, a schema left by an interrupted attempt) changes nothing and returns
        ``None``: the caller then takes the step-by-step path, which reports it or recovers.
        """
        if not isinstance(self._store, OneTransactionStore) or not isinstance(
            self._isolation, ScriptedStorage
        ):
            return None
        script = await self._isolation.storage_script(tenant, self._store.engine)
        if script is None:
            return None
        pending = tenant
        provisioning = pending.model_copy(update={"status": TenantStatus.PROVISIONING})
        active = provisioning.model_copy(
            update={"status": TenantStatus.ACTIVE, "updated_at": later_than(tenant.updated_at)}
        )
        try:
            if not await self._store.add_with_storage(active, script):
                return None
        except Exception:
            logger.debug(
                "creating tenant %r in one transaction failed; creating it step by step",
                tenant.identifier,
                exc_info=True,
            )
            return None
        await self._lookup.invalidate(tenant.identifier)
        await self._hooks.emit(TenantChanged(action="create", tenant=pending, previous=None))
        await self._hooks.emit(
            TenantChanged(
                action="start_provisioning", tenant=provisioning, previous=TenantStatus.PENDING
            )
        )
        await self._hooks.emit(
            TenantChanged(action="provision", tenant=active, previous=TenantStatus.PROVISIONING)
        )
        return active

    async def retry(
        self, identifier: str, *, provision: bool = True, stale_after: float = 600.0
    ) -> Tenant:
        """Give a stuck tenant a fresh start: back to ``pending`` with no attempts counted.

        Stuck means ``failed``, or ``provisioning`` with no progress for ``stale_after`` seconds
        (the process provisioning it died, e.g. a ``create_tenant`` cut off by an outage). With
        ``provision`` its storage is provisioned at once, reusing storage an earlier attempt made
        for it; a failure leaves it ``failed`` and raises. Without, a worker takes it.
        """
        tenant = await self.require(identifier)
        stale = tenant.status is TenantStatus.PROVISIONING and (
            tenant.updated_at < datetime.now(UTC) - timedelta(seconds=stale_after)
        )
        if tenant.status is not TenantStatus.FAILED and not stale:
            raise InvalidTransition(
                f"cannot retry tenant {identifier!r}: it is {tenant.status.value}; only failed "
                f"tenants, and tenants provisioning without progress for {stale_after:g} s, "
                "are retried"
            )
        pending = await self._move(tenant, "retry", provisioning_attempts=0)
        if not provision:
            return pending
        provisioning = await self._move(pending, "start_provisioning", provisioning_attempts=1)
        try:
            await self._isolation.provision(provisioning)
        except Exception:
            await self._move(provisioning, "fail")
            raise
        return await self._move(provisioning, "provision")

    async def release(self, tenant: Tenant, *, attempted: bool) -> Tenant | None:
        """Hand a claimed tenant back to ``pending`` after its worker was interrupted.

        Its attempt counts only if it was ``attempted``. Returns ``None`` when the record is no
        longer the claim that was read (another worker or an operator changed it): nothing to do.
        """
        attempts = tenant.provisioning_attempts - (0 if attempted else 1)
        try:
            return await self._move(tenant, "retry", provisioning_attempts=max(attempts, 0))
        except InvalidTransition:
            return None

    async def update(
        self,
        identifier: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Tenant:
        """Change the tenant's ``name`` and/or replace its ``metadata``; the status stays.

        Invalidated everywhere like a status change, so plans and limits read from the metadata
        take effect in every process at once; a `TenantChanged` event with action ``update``
        follows.
        """
        tenant = await self.require(identifier)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if metadata is not None:
            changes["metadata"] = dict(metadata)
        if not changes:
            return tenant
        return await self._move(tenant, "update", **changes)

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

    async def change(self, tenant: Tenant, action: LifecycleAction, **changes: Any) -> Tenant:
        """Apply ``action`` to the record as read (``tenant``) with ``changes`` to its fields.

        A compare-and-set like every change here (`InvalidTransition` if the record changed
        since), then invalidated everywhere and announced. For steps that move a tenant's
        storage (`fastapi_tenancy.transfer`), which record their progress on the tenant.
        """
        return await self._move(tenant, action, **changes)

    async def delete(self, identifier: str) -> Tenant:
        deleted = await self.transition(identifier, "delete")
        if not self._soft_delete:
            await self.purge(identifier)
        return deleted

    async def purge(self, identifier: str) -> None:
        """Destroy a deleted tenant's data and record; finishes a purge that was interrupted.

        Right before anything is destroyed the record moves to ``purging``, only if it is still
        the deleted record read at the start: a restore (or any change) made while the purge
        waited for in-flight work wins, and the purge stops with `InvalidTransition`.
        """
        tenant = await self.require(identifier)
        if tenant.status not in (TenantStatus.DELETED, TenantStatus.PURGING):
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
        if tenant.status is TenantStatus.DELETED:
            marked = await self._store.update_if_unchanged(
                tenant.model_copy(update={"status": TenantStatus.PURGING}), expected=tenant
            )
            if marked is None:
                current = await self._store.get(tenant.id)
                now = "gone" if current is None else current.status.value
                raise InvalidTransition(
                    f"tenant {identifier!r} changed while its purge waited (it is now {now}); "
                    "nothing was purged"
                )
        await self._isolation.purge(tenant)
        hosts = [domain.host for domain in await self.list_domains(tenant)]
        await self._store.delete(tenant.id)  # its domains go with it
        await self._lookup.invalidate(identifier)
        for host in hosts:
            await self._lookup.invalidate(host)
        await self._hooks.emit(
            TenantChanged(action="purge", tenant=tenant, previous=TenantStatus.DELETED)
        )

    async def _move(self, tenant: Tenant, action: LifecycleAction, **changes: Any) -> Tenant:
        """Store ``action`` on ``tenant`` (plus ``changes``) if nothing changed it since."""
        if action == "update":
            target = tenant.status
        else:
            sources, target = TRANSITIONS[action]
            if tenant.status not in sources:
                raise InvalidTransition(
                    f"cannot {action} tenant {tenant.identifier!r}: it is {tenant.status.value}"
                )
            changes["status"] = target
            changes["deleted_at"] = datetime.now(UTC) if target is TenantStatus.DELETED else None
        updated = await self._store.update_if_unchanged(
            tenant.model_copy(update=changes), expected=tenant
        )
        if updated is None:
            current = await self._store.get(tenant.id)
            now = "gone" if current is None else current.status.value
            raise InvalidTransition(
                f"cannot {action} tenant {tenant.identifier!r}: it changed meanwhile (it is now "
                f"{now}); nothing was changed, try again"
            )
        await self._lookup.invalidate(tenant.identifier)
        await self._hooks.emit(TenantChanged(action=action, tenant=updated, previous=tenant.status))
        return updated

    async def _refuse_shared_database(self, database_url: str) -> None:
        """Refuse an explicit database another tenant already has: a purge would destroy both."""
        wanted = _database_key(database_url)
        for other in await self._store.list(include_deleted=True):
            if other.database_url is not None and (
                _database_key(other.database_url.get_secret_value()) == wanted
            ):
                raise TenantAlreadyExists(
                    f"tenant {other.identifier!r} already uses this database; each tenant needs a "
                    "database of its own (purging one would destroy the other's tables)"
                )

    # Custom domains (`fastapi_tenancy.domains`): stored, invalidated everywhere, then announced.

    def _domain_store(self) -> DomainStore:
        if not isinstance(self._store, DomainStore):
            raise ConfigurationError(
                f"{type(self._store).__name__} keeps no custom domains: implement DomainStore"
            )
        return self._store

    async def add_domain(self, identifier: str, host: str) -> Domain:
        """Give the (normalised) ``host`` to the tenant; `DomainAlreadyExists` if it has one.

        The host is invalidated in every process right after, so a "no such host" cached by an
        earlier request lasts no longer than one for a tenant created since.
        """
        store = self._domain_store()
        tenant = await self.require(identifier)
        if tenant.status in (TenantStatus.DELETED, TenantStatus.PURGING):
            raise InvalidTransition(
                f"cannot add a domain to tenant {identifier!r}: it is {tenant.status.value}"
            )
        domain = await store.add_domain(Domain(host, tenant.id))
        await self._lookup.invalidate(host)
        await self._hooks.emit(DomainChanged(action="add", tenant=tenant, host=host))
        return domain

    async def remove_domain(self, host: str, *, identifier: str | None = None) -> Domain:
        """Take ``host`` from its tenant (which must be ``identifier``, when given)."""
        store = self._domain_store()
        owner = await store.get_by_domain(host)
        if owner is None or (identifier is not None and owner.identifier != identifier):
            whose = "any tenant" if identifier is None else f"tenant {identifier!r}"
            raise TenantNotFound(f"domain {host!r} does not belong to {whose}")
        removed = await store.remove_domain(host)
        await self._lookup.invalidate(host)
        if removed is None:
            raise TenantNotFound(f"domain {host!r} does not belong to any tenant")
        await self._hooks.emit(DomainChanged(action="remove", tenant=owner, host=host))
        return removed

    async def list_domains(self, tenant: Tenant | None = None) -> list[Domain]:
        """Every custom domain (or ``tenant``'s), ordered by host; none for a store without."""
        if not isinstance(self._store, DomainStore):
            return []
        return await self._store.list_domains(None if tenant is None else tenant.id)


def _database_key(url: str) -> tuple[str, str, int | None, str]:
    """What names one database on one server, whatever the user, password and options."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    if backend == "sqlite":
        database = str(Path(database).resolve())
    return (backend, (parsed.host or "").lower(), parsed.port, database)

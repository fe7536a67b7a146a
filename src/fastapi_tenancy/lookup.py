"""② Lookup: identifier -> active `Tenant`, through the cache, with one store query per miss.

* A cached tenant (or a cached "no such tenant") answers without touching the store.
* Concurrent misses for one identifier share a single store query (single-flight).
* The status gate turns unknown and soft-deleted tenants into `TenantNotFound`, suspended
  ones into `TenantSuspended` and ones being moved into `TenantMoving` (503, ``Retry-After``).
* Custom domains (`find_host`) are cached like identifiers, keyed by the host name.
* `invalidate` drops the cached entry and discards any load already in flight, so a lifecycle
  change is never overwritten by a stale read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi_tenancy._deprecation import renamed
from fastapi_tenancy.cache.base import TenantCache
from fastapi_tenancy.exceptions import (
    AuthenticationFailed,
    InvalidTenantIdentifier,
    TenantMoving,
    TenantNotFound,
    TenantSuspended,
)
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.store.base import DomainStore, TenantStore

__all__ = ["TenantLookup", "check_status"]


def check_status(tenant: Tenant | None) -> Tenant:
    """Return ``tenant`` if it may serve requests; raise the error the client should see."""
    if tenant is None:
        raise TenantNotFound()
    if tenant.status is TenantStatus.ACTIVE:
        return tenant
    if tenant.status is TenantStatus.SUSPENDED:
        raise TenantSuspended()
    if tenant.status is TenantStatus.MOVING:
        raise TenantMoving()
    # Deleted, and not yet provisioned: the same answer as an unknown tenant.
    raise TenantNotFound()


class TenantLookup:
    """Finds tenants by identifier for the request path.

    Example::

        lookup = TenantLookup(store, MemoryTenantCache(), ttl=60, negative_ttl=5)
        tenant = await lookup.get_active("acme")   # raises TenantNotFound / TenantSuspended
    """

    def __init__(
        self,
        store: TenantStore,
        cache: TenantCache | None,
        *,
        ttl: float,
        negative_ttl: float,
    ) -> None:
        self._store = store
        self._cache = cache
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._inflight: dict[str, asyncio.Task[Tenant | None]] = {}
        self._generation = 0
        self._loads_done = 0

    async def get_active(self, identifier: str) -> Tenant:
        """The active tenant named ``identifier``; raises if it may not serve requests."""
        return check_status(await self.find(identifier))

    # ``resolve`` names stage ① (the resolvers), and this is stage ②: the old names warn.
    resolve = renamed("get_active", "TenantLookup", "resolve")
    resolve_request = renamed("get_active_for", "TenantLookup", "resolve_request")

    async def find(self, identifier: str) -> Tenant | None:
        """The tenant record (any status) or ``None``, from the cache when possible."""
        return await self._find(identifier, self._store.get_by_identifier)

    async def get_active_for(self, resolution: Resolution) -> Tenant:
        """② for a request: the active tenant ``resolution`` names, by identifier or by host.

        A custom domain (``resolution.host``) is mapped to its owner; when another strategy also
        named a tenant, the host must belong to that one, or the request names two tenants.
        """
        if resolution.host is None:
            return await self.get_active(resolution.identifier)
        tenant = await self.find_host(resolution.host)
        if tenant is None:
            raise TenantNotFound()
        if resolution.identifier and tenant.identifier != resolution.identifier:
            if resolution.claims is not None:
                raise AuthenticationFailed("the token names another tenant than the request")
            raise InvalidTenantIdentifier("the request names two different tenants")
        return check_status(tenant)

    async def find_host(self, host: str) -> Tenant | None:
        """The tenant (any status) owning the custom domain ``host``, or ``None``.

        The cache keeps host -> tenant under the host itself (a host always has a dot, an
        identifier never does); the record served is then the one cached under its identifier,
        which lifecycle changes invalidate, so a suspension needs no per-domain invalidation.
        """
        store = self._store
        if not isinstance(store, DomainStore):
            return None
        owner = await self._find(host, store.get_by_domain)
        if owner is None:
            return None
        current = await self.find(owner.identifier)
        if current is not None and current.id == owner.id:
            return current
        # The owner went (purged) or its identifier now names another tenant: never serve a
        # host through a stale mapping; ask the store.
        return await store.get_by_domain(host)

    async def _find(
        self, key: str, load: Callable[[str], Awaitable[Tenant | None]]
    ) -> Tenant | None:
        cache = self._cache
        if cache is not None:
            loads_done = self._loads_done
            hit = await cache.get(key)
            if hit is None and key not in self._inflight and self._loads_done != loads_done:
                # A load finished while the (shared) cache was being read, so the miss may be
                # stale: read the cache once more rather than query the store a second time.
                hit = await cache.get(key)
            if hit is not None:
                return hit.tenant
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, self._generation, load))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._load_finished(key, done))
        # A cancelled caller must not cancel the load the other callers are waiting for.
        return await asyncio.shield(task)

    async def invalidate(self, identifier: str) -> None:
        """Forget what is known about ``identifier`` (or a host), in every process it reaches."""
        self.forget(identifier)
        if self._cache is not None:
            await self._cache.delete(identifier)

    def forget(self, identifier: str | None) -> None:
        """Discard loads in flight for ``identifier`` (``None``: all), so none of them is cached.

        Called when another process invalidated the identifier; the cache dropped its entry.
        """
        self._generation += 1
        if identifier is None:
            self._inflight.clear()
        else:
            self._inflight.pop(identifier, None)

    async def _load(
        self, identifier: str, generation: int, load: Callable[[str], Awaitable[Tenant | None]]
    ) -> Tenant | None:
        cache = self._cache
        token = await cache.read_token(identifier) if cache is not None else None
        tenant = await load(identifier)
        if cache is not None and generation == self._generation:
            ttl = self._ttl if tenant is not None else self._negative_ttl
            if ttl > 0:
                await cache.set(identifier, tenant, ttl=ttl, token=token)
        return tenant

    def _load_finished(self, identifier: str, done: asyncio.Task[Tenant | None]) -> None:
        self._loads_done += 1
        if self._inflight.get(identifier) is done:
            del self._inflight[identifier]

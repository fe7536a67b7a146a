"""`MemoryTenantStore`: tenant records in a dict, for tests, demos and single-process tools."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

from fastapi_tenancy.domains import Domain, DomainAlreadyExists
from fastapi_tenancy.exceptions import TenantAlreadyExists, TenantNotFound
from fastapi_tenancy.models import Tenant, TenantStatus, later_than

__all__ = ["MemoryTenantStore"]

GONE = (TenantStatus.DELETED, TenantStatus.PURGING)


class MemoryTenantStore:
    """A `TenantStore` that keeps records in process memory; they vanish with the process.

    Task-safe on one event loop: no method awaits between checking and writing, so concurrent
    tasks never interleave inside an operation. Not for use from several threads.

    Example::

        store = MemoryTenantStore()
        await store.add(Tenant(identifier="acme"))
        tenant = await store.get_by_identifier("acme")
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Tenant] = {}
        self._id_by_identifier: dict[str, str] = {}
        self._domains: dict[str, Domain] = {}

    async def initialize(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release; the records stay until the store is garbage collected."""

    async def get(self, tenant_id: str) -> Tenant | None:
        """The tenant with ``tenant_id``, or ``None``."""
        return self._by_id.get(tenant_id)

    async def get_by_identifier(self, identifier: str) -> Tenant | None:
        """The tenant named ``identifier``, or ``None``."""
        tenant_id = self._id_by_identifier.get(identifier)
        return None if tenant_id is None else self._by_id[tenant_id]

    async def add(self, tenant: Tenant) -> Tenant:
        """Insert ``tenant``; raises `TenantAlreadyExists` if its id or identifier is taken."""
        if tenant.id in self._by_id:
            raise TenantAlreadyExists(f"a tenant with id {tenant.id!r} already exists")
        if tenant.identifier in self._id_by_identifier:
            raise TenantAlreadyExists(f"identifier {tenant.identifier!r} is taken")
        self._by_id[tenant.id] = tenant
        self._id_by_identifier[tenant.identifier] = tenant.id
        return tenant

    async def update(self, tenant: Tenant) -> Tenant:
        """Replace the record with the same id, stamping ``updated_at``; returns what was stored."""
        current = self._by_id.get(tenant.id)
        if current is None:
            raise TenantNotFound(f"no tenant with id {tenant.id!r}")
        owner = self._id_by_identifier.get(tenant.identifier)
        if owner is not None and owner != tenant.id:
            raise TenantAlreadyExists(f"identifier {tenant.identifier!r} is taken")
        stored = tenant.model_copy(update={"updated_at": later_than(tenant.updated_at)})
        del self._id_by_identifier[current.identifier]
        self._id_by_identifier[stored.identifier] = stored.id
        self._by_id[stored.id] = stored
        return stored

    async def update_if_unchanged(self, tenant: Tenant, *, expected: Tenant) -> Tenant | None:
        """Write ``tenant`` if the record still has ``expected``'s status and ``updated_at``."""
        current = self._by_id.get(expected.id)
        if (
            current is None
            or current.status is not expected.status
            or current.updated_at != expected.updated_at
        ):
            return None
        return await self.update(
            tenant.model_copy(update={"updated_at": later_than(expected.updated_at)})
        )

    async def delete(self, tenant_id: str) -> None:
        """Remove the record for good; no error if it is already gone."""
        tenant = self._by_id.pop(tenant_id, None)
        if tenant is not None:
            del self._id_by_identifier[tenant.identifier]
        for host in [host for host, d in self._domains.items() if d.tenant_id == tenant_id]:
            del self._domains[host]

    # Custom domains (`fastapi_tenancy.store.base.DomainStore`).

    async def add_domain(self, domain: Domain) -> Domain:
        """Give ``domain.host`` to its tenant; raises `DomainAlreadyExists` if it has an owner."""
        if domain.tenant_id not in self._by_id:
            raise TenantNotFound(f"no tenant with id {domain.tenant_id!r}")
        if domain.host in self._domains:
            raise DomainAlreadyExists(f"domain {domain.host!r} already belongs to a tenant")
        self._domains[domain.host] = domain
        return domain

    async def remove_domain(self, host: str) -> Domain | None:
        """Take ``host`` from its tenant; returns what was removed, ``None`` if nobody owned it."""
        return self._domains.pop(host, None)

    async def list_domains(self, tenant_id: str | None = None) -> builtins.list[Domain]:
        """Every domain (or ``tenant_id``'s), ordered by host."""
        return sorted(
            (d for d in self._domains.values() if tenant_id is None or d.tenant_id == tenant_id),
            key=lambda domain: domain.host,
        )

    async def get_by_domain(self, host: str) -> Tenant | None:
        """The tenant that owns ``host``, in any status, or ``None``."""
        domain = self._domains.get(host)
        return None if domain is None else self._by_id.get(domain.tenant_id)

    async def claim_for_provisioning(
        self, *, limit: int, stale_before: datetime
    ) -> builtins.list[Tenant]:
        """Claim up to ``limit`` pending (or stale provisioning) tenants, oldest first."""
        candidates = sorted(
            (t for t in self._by_id.values() if _claimable(t, stale_before)),
            key=lambda tenant: tenant.created_at,
        )[:limit]
        claimed = []
        for tenant in candidates:
            stored = tenant.model_copy(
                update={
                    "status": TenantStatus.PROVISIONING,
                    "provisioning_attempts": tenant.provisioning_attempts + 1,
                    "updated_at": datetime.now(UTC),
                }
            )
            self._by_id[stored.id] = stored
            claimed.append(stored)
        return claimed

    async def list(self, *, include_deleted: bool = False) -> builtins.list[Tenant]:
        """All tenants ordered by identifier; soft-deleted ones only when asked for."""
        return sorted(
            (
                tenant
                for tenant in self._by_id.values()
                if include_deleted or tenant.status not in GONE
            ),
            key=lambda tenant: tenant.identifier,
        )


def _claimable(tenant: Tenant, stale_before: datetime) -> bool:
    return tenant.status is TenantStatus.PENDING or (
        tenant.status is TenantStatus.PROVISIONING and tenant.updated_at < stale_before
    )

"""The tenant store contract: the source of truth for tenant records."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from fastapi_tenancy.domains import Domain
from fastapi_tenancy.models import Tenant

__all__ = ["DomainStore", "TenantStore"]


class TenantStore(Protocol):
    """Keeps tenant records. Every implementation passes ``tests/store/test_contract.py``.

    Backend failures (server down, connection refused, timeouts) surface as
    `fastapi_tenancy.exceptions.ServiceUnavailable`, never as driver exceptions.
    """

    async def initialize(self) -> None:
        """Prepare storage (for example create the tenants table); safe to call repeatedly."""
        ...

    async def close(self) -> None:
        """Release what the store opened itself; an engine passed in stays open."""
        ...

    async def get(self, tenant_id: str) -> Tenant | None: ...

    async def get_by_identifier(self, identifier: str) -> Tenant | None: ...

    async def add(self, tenant: Tenant) -> Tenant:
        """Insert ``tenant``; raises `TenantAlreadyExists` if its id or identifier is taken."""
        ...

    async def update(self, tenant: Tenant) -> Tenant:
        """Replace the record with ``tenant.id``, stamping ``updated_at``; returns what was stored.

        Raises `TenantNotFound` when no record has that id, and `TenantAlreadyExists` when the
        new identifier belongs to another tenant.
        """
        ...

    async def update_if_unchanged(self, tenant: Tenant, *, expected: Tenant) -> Tenant | None:
        """Write ``tenant`` only if the stored record still has ``expected``'s status and time.

        A compare-and-set on ``status`` and ``updated_at``: returns what was stored, or ``None``
        when the record changed (or went) since ``expected`` was read. The new ``updated_at`` is
        later than ``expected.updated_at``, so every write moves it.
        """
        ...

    async def delete(self, tenant_id: str) -> None:
        """Remove the record for good (no error if it is already gone)."""
        ...

    async def claim_for_provisioning(self, *, limit: int, stale_before: datetime) -> list[Tenant]:
        """Move up to ``limit`` tenants to ``provisioning`` and return them, oldest first.

        Candidates are ``pending`` tenants and ``provisioning`` ones last touched before
        ``stale_before`` (their worker died). Each claim bumps ``provisioning_attempts`` and
        ``updated_at`` in one conditional write, so concurrent workers never claim one tenant twice.
        """
        ...

    async def list(self, *, include_deleted: bool = False) -> list[Tenant]:
        """All tenants ordered by identifier; soft-deleted ones only when asked for."""
        ...


@runtime_checkable
class DomainStore(Protocol):
    """A store that also keeps custom domains (`fastapi_tenancy.domains`); both built-in do.

    Hosts are stored normalised (`normalise_domain`); a tenant's domains go with its record.
    """

    async def add_domain(self, domain: Domain) -> Domain:
        """Give ``domain.host`` to its tenant; raises `DomainAlreadyExists` if it has an owner."""
        ...

    async def remove_domain(self, host: str) -> Domain | None:
        """Take ``host`` from its tenant; returns what was removed, ``None`` if nobody owned it."""
        ...

    async def list_domains(self, tenant_id: str | None = None) -> list[Domain]:
        """Every domain (or ``tenant_id``'s), ordered by host."""
        ...

    async def get_by_domain(self, host: str) -> Tenant | None:
        """The tenant that owns ``host``, in any status, or ``None``."""
        ...

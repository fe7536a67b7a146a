"""`status`: which revision each tenant is at, and which tenants are behind the script's heads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from alembic.config import Config
from alembic.script import ScriptDirectory

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.migrations.errors import describe_error
from fastapi_tenancy.migrations.report import TenantMigration
from fastapi_tenancy.migrations.runner import (
    config_passwords,
    planned_tenants,
    scan_tenant_revisions,
)
from fastapi_tenancy.migrations.targets import connect, target_for
from fastapi_tenancy.migrations.versions import format_revisions, read_revisions
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["TenantRevision", "status"]


@dataclass(frozen=True, slots=True)
class TenantRevision:
    """Where one tenant's tables are; ``identifier`` is ``None`` for row isolation's tables.

    ``revision`` is the recorded revision ids, comma-separated (``None``: no version table yet,
    or unreadable). ``pending`` is true when the tenant is not at the script's heads, so
    ``upgrade`` would work on it; a tenant whose revision cannot be read has ``error`` set and
    counts as pending.
    """

    identifier: str | None
    revision: str | None
    pending: bool
    error: str | None


async def status(
    tenancy: Tenancy,
    alembic_config: Config,
    *,
    identifiers: Sequence[str] | None = None,
    concurrency: int | None = None,
) -> tuple[TenantRevision, ...]:
    """Each tenant's revision (every active and suspended one, or ``identifiers``), in order.

    Reads only: no lock, no Alembic run. Under schema isolation every revision comes from the
    bulk scan on the central server; elsewhere each tenant's database is read, ``concurrency``
    at a time (by default ``database_pool_size``).
    """
    settings = tenancy.settings.operations
    if concurrency is None:
        concurrency = settings.concurrency
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    heads = frozenset(ScriptDirectory.from_config(alembic_config).get_heads())
    planned = await planned_tenants(tenancy, identifiers)
    scanned: dict[str, frozenset[str]] = {}
    if settings.isolation_strategy == "schema":
        scanned = await scan_tenant_revisions(tenancy, planned)
    secrets = config_passwords(tenancy)
    semaphore = asyncio.Semaphore(concurrency)

    async def read(item: Tenant | TenantMigration | None) -> TenantRevision:
        if isinstance(item, TenantMigration):  # a named tenant that cannot be migrated
            return TenantRevision(item.identifier, None, pending=True, error=item.error)
        identifier = item.identifier if item is not None else None
        if item is not None and item.id in scanned:
            revisions = scanned[item.id]
            return TenantRevision(identifier, format_revisions(revisions), revisions != heads, None)
        try:
            async with semaphore:
                target = target_for(tenancy, item)
                async with connect(tenancy, target) as conn, conn.begin():
                    revisions = await read_revisions(conn, target.schema)
        except Exception as exc:
            return TenantRevision(
                identifier, None, pending=True, error=describe_error(exc, secrets)
            )
        return TenantRevision(identifier, format_revisions(revisions), revisions != heads, None)

    return tuple(await asyncio.gather(*(read(item) for item in planned)))

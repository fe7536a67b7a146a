"""Per-tenant database migrations with Alembic.

In ``alembic/env.py``::

    from fastapi_tenancy.migrations import run_migrations
    from myapp.models import Base

    run_migrations(target_metadata=Base.metadata)

and from Python::

    report = await upgrade(tenancy, alembic.config.Config("alembic.ini"))

Needs the ``migrations`` extra (``pip install fastapi-tenancy-kit[migrations]``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi_tenancy.migrations.environment import run_migrations
    from fastapi_tenancy.migrations.errors import MigrationError, MigrationLockTimeout
    from fastapi_tenancy.migrations.report import (
        MigrationOutcome,
        MigrationReport,
        TenantMigration,
    )
    from fastapi_tenancy.migrations.runner import downgrade, migrate_tenant, upgrade
    from fastapi_tenancy.migrations.status import TenantRevision, status

__all__ = [
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationOutcome",
    "MigrationReport",
    "TenantMigration",
    "TenantRevision",
    "downgrade",
    "migrate_tenant",
    "run_migrations",
    "status",
    "upgrade",
]

# Loaded on first use, so `fastapi_tenancy.migrations.rls` (the row-level security DDL, which the
# CLI's `rls enable` runs) works without Alembic and without the runtime.
_HOMES = {
    "MigrationError": "errors",
    "MigrationLockTimeout": "errors",
    "MigrationOutcome": "report",
    "MigrationReport": "report",
    "TenantMigration": "report",
    "TenantRevision": "status",
    "downgrade": "runner",
    "migrate_tenant": "runner",
    "run_migrations": "environment",
    "status": "status",
    "upgrade": "runner",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

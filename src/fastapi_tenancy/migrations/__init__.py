"""Per-tenant database migrations with Alembic.

In ``alembic/env.py``::

    from fastapi_tenancy.migrations import run_migrations
    from myapp.models import Base

    run_migrations(target_metadata=Base.metadata)

and from Python::

    report = await upgrade(tenancy, alembic.config.Config("alembic.ini"))

Needs the ``migrations`` extra (``pip install fastapi-tenancy[migrations]``).
"""

from __future__ import annotations

from fastapi_tenancy.migrations.environment import run_migrations
from fastapi_tenancy.migrations.errors import MigrationError, MigrationLockTimeout
from fastapi_tenancy.migrations.report import MigrationOutcome, MigrationReport, TenantMigration
from fastapi_tenancy.migrations.runner import migrate_tenant, upgrade

__all__ = [
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationOutcome",
    "MigrationReport",
    "TenantMigration",
    "migrate_tenant",
    "run_migrations",
    "upgrade",
]

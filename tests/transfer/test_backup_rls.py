"""Row isolation under PostgreSQL row-level security: a backup as the app role has every row."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.transfer.backup import backup_tenant
from tests.support.models import Base, Item
from tests.support.rls import rls_database


@pytest.mark.postgres
async def test_a_backup_under_row_level_security_binds_its_tenant(tmp_path: Path) -> None:
    async with rls_database() as database:
        config = TenancyConfig(
            database_url=database.app_url,
            isolation_strategy="row",
            tenant_metadata=Base.metadata,
            row_level_security=True,
        )
        async with Tenancy(config) as tenancy:
            for identifier in ("a", "b"):
                await tenancy.create_tenant(identifier)
                async with tenancy.session(identifier) as session:
                    session.add_all(Item(name=f"{identifier}:{n}") for n in range(3))
                    await session.commit()
            # The policies hide every row from a transaction that names no tenant: without the
            # binding this backup would hold none, and agree with itself that none were there.
            manifest = await backup_tenant(tenancy, "a", tmp_path / "a.tar.gz")
        assert manifest.tables == {"items": 3, "notes": 0}

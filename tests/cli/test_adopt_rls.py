"""``tenants adopt`` and the doctor under PostgreSQL row-level security, whose policies hide rows
without a tenant from every role that does not bypass them: adoption refuses to report "0 rows"
as the app role, and works as a BYPASSRLS role."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig, tenant_id_type
from fastapi_tenancy.cli import main
from tests.cli.test_adopt import LEGACY, SCOPED, customers, invoices, plans
from tests.support.rls import APP_ROLE, rls_database

pytestmark = pytest.mark.postgres

# The tables between step 1 and step 3: tenant_id added, still nullable.
NULLABLE = MetaData()
for _table in LEGACY.sorted_tables:
    _copy = _table.to_metadata(NULLABLE)
    if _table.name in SCOPED:
        _copy.append_column(Column("tenant_id", tenant_id_type(), index=True, nullable=True))
NULLABLE_SPEC = "tests.cli.test_adopt_rls:NULLABLE"


async def run(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


async def test_adoption_through_row_level_security_needs_a_role_that_bypasses_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with rls_database(metadata=NULLABLE) as db:
        admin = create_async_engine(db.superuser_url, poolclass=NullPool)
        async with admin.begin() as conn:  # the superuser sees past the policies
            await conn.execute(insert(plans), [{"id": 1, "name": "free"}])
            await conn.execute(insert(customers), [{"id": 1, "name": "Ada"}])
            await conn.execute(insert(invoices), [{"id": 1, "customer_id": 1, "cents": 5}])
        monkeypatch.setenv("TENANCY_TENANT_METADATA", NULLABLE_SPEC)
        monkeypatch.setenv("TENANCY_ROW_LEVEL_SECURITY", "true")

        # As the app's role the rows are invisible: no silent "adopted 0 rows".
        assert await run("--database-url", db.app_url, "tenants", "adopt", "acme") == 1
        assert capsys.readouterr().err.splitlines() == [
            "fastapi-tenancy: error: row-level security hides rows without a tenant from role "
            f"'{APP_ROLE}' in customers, invoices: adopt as a role with BYPASSRLS "
            "(--database-url, with TENANCY_ROW_LEVEL_SECURITY=false for the command), or before "
            "`fastapi-tenancy rls enable`"
        ]
        await run("--database-url", db.app_url, "doctor", "--json")
        assert _check(capsys, "adopted")["message"] == (
            "row-level security hides rows without a tenant from this role in invoices, customers"
        )

        # As a BYPASSRLS role, as the message says.
        monkeypatch.setenv("TENANCY_ROW_LEVEL_SECURITY", "false")
        assert await run("--database-url", db.bypass_url, "tenants", "adopt", "acme") == 0
        assert capsys.readouterr().out.splitlines()[-1] == (
            "adopted 2 row(s) in 2 table(s) into tenant acme"
        )
        async with admin.connect() as conn:
            unowned = await conn.scalar(
                select(func.count())
                .select_from(NULLABLE.tables["customers"])
                .where(NULLABLE.tables["customers"].c.tenant_id.is_(None))
            )
            assert unowned == 0
        await admin.dispose()

        # The app's role, under the policies, now serves the rows to their tenant.
        config = TenancyConfig(
            database_url=db.app_url, tenant_metadata=NULLABLE, row_level_security=True
        )
        async with Tenancy(config) as tenancy, tenancy.session("acme") as session:
            table = NULLABLE.tables["customers"]
            assert (await session.execute(select(table.c.name))).scalars().all() == ["Ada"]


def _check(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, Any]:
    checks = json.loads(capsys.readouterr().out)["checks"]
    found: dict[str, Any] = next(check for check in checks if check["name"] == name)
    return found

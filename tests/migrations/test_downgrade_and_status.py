"""`downgrade` and `status` with real Alembic, over each strategy that migrates tenants."""

from __future__ import annotations

from alembic.config import Config

from fastapi_tenancy import Tenancy
from fastapi_tenancy.migrations import downgrade, status, upgrade
from tests.support.migration_scripts import (
    FIRST,
    SECOND,
    empty_config,
    outcomes,
    per_tenant,
)
from tests.support.migration_storage import item_columns, revision

TENANTS = ["acme", "globex", "initech"]


@per_tenant
async def test_downgrade_moves_the_named_tenants_back_and_status_shows_who_is_behind(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        tenants = {name: await tenancy.create_tenant(name) for name in TENANTS}
        await upgrade(tenancy, script)

        back = await downgrade(tenancy, script, FIRST, identifiers=["acme", "nobody"])

        assert outcomes(back) == {"acme": "downgraded", "nobody": "failed"}
        assert (back.downgraded, back.failed) == (1, 1)
        assert (back.migrations[0].from_revision, back.migrations[0].to_revision) == (
            SECOND,
            FIRST,
        )
        assert await item_columns(config, tenants["acme"]) == ["id", "tenant_id", "name"]
        assert await revision(config, tenants["globex"]) == SECOND

        found = {entry.identifier: entry for entry in await status(tenancy, script)}
        assert {name: (e.revision, e.pending) for name, e in found.items()} == {
            "acme": (FIRST, True),
            "globex": (SECOND, False),
            "initech": (SECOND, False),
        }

        again = await downgrade(tenancy, script, FIRST, identifiers=["acme"])
        assert outcomes(again) == {"acme": "skipped"}

        to_base = await downgrade(tenancy, script, "base")
        assert outcomes(to_base) == dict.fromkeys(TENANTS, "downgraded")
        for tenant in tenants.values():
            assert await item_columns(config, tenant) == []
        assert all(
            entry.revision is None and entry.pending for entry in await status(tenancy, script)
        )
        # A tenant at base has nothing left to downgrade.
        assert outcomes(await downgrade(tenancy, script, "base")) == dict.fromkeys(
            TENANTS, "skipped"
        )


@per_tenant
async def test_downgrading_to_a_revision_above_a_tenant_fails_that_tenant_only(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        for name in TENANTS:
            await tenancy.create_tenant(name)
        await upgrade(tenancy, script)
        await downgrade(tenancy, script, "base", identifiers=["globex"])

        report = await downgrade(tenancy, script, FIRST)

        assert outcomes(report) == {
            "acme": "downgraded",
            "globex": "failed",
            "initech": "downgraded",
        }
        assert (await tenancy.get_tenant("globex")) is not None
        assert all(
            entry.revision == (None if entry.identifier == "globex" else FIRST)
            for entry in await status(tenancy, script)
        )

"""`upgrade` with real Alembic over every isolation strategy and real databases."""

from __future__ import annotations

import asyncio

import pytest
from alembic.config import Config
from sqlalchemy import text

from fastapi_tenancy import Tenancy, Tenant, TenantStatus
from fastapi_tenancy.migrations import TenantMigration, migrate_tenant, upgrade
from fastapi_tenancy.migrations.locks import advisory_key, named_lock
from fastapi_tenancy.worker import ProvisioningWorker
from tests.support.backends import schema_exists
from tests.support.migration_scripts import (
    FIRST,
    SECOND,
    empty_config,
    outcomes,
    per_tenant,
)
from tests.support.migration_storage import add_note_column, item_columns, revision, tenant_tables

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]


@per_tenant
async def test_upgrade_migrates_every_tenant_then_skips_them(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    progress: list[TenantMigration] = []
    async with Tenancy(config) as tenancy:
        tenants = [await tenancy.create_tenant(identifier) for identifier in TENANTS]

        first = await upgrade(tenancy, script, on_progress=progress.append)

        assert outcomes(first) == dict.fromkeys(TENANTS, "upgraded")
        assert first.upgraded == len(TENANTS)
        assert first.ok
        assert sorted(m.identifier or "" for m in progress) == sorted(TENANTS)
        for migration in first.migrations:
            assert (migration.from_revision, migration.to_revision) == (None, SECOND)
        for tenant in tenants:
            assert await item_columns(config, tenant) == ["id", "tenant_id", "name", "note"]
            assert await revision(config, tenant) == SECOND
        assert await item_columns(config, None) == []  # the central database has no tenant table

        # How cheap the re-run is, benchmarks/operations.py measures; here: it runs no Alembic.
        again = await upgrade(tenancy, script)

        assert outcomes(again) == dict.fromkeys(TENANTS, "skipped")
        assert all(m.from_revision == m.to_revision == SECOND for m in again.migrations)


@per_tenant
async def test_a_failing_tenant_is_recorded_and_the_others_are_upgraded(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        tenants = [await tenancy.create_tenant(identifier) for identifier in TENANTS]
        assert outcomes(await upgrade(tenancy, script, revision=FIRST)) == dict.fromkeys(
            TENANTS, "upgraded"
        )
        broken = tenants[2]
        await add_note_column(config, broken)

        report = await upgrade(tenancy, script)

        assert outcomes(report) == dict.fromkeys(TENANTS, "upgraded") | {
            broken.identifier: "failed"
        }
        failure = next(m for m in report.migrations if m.outcome == "failed")
        assert failure.from_revision == FIRST
        assert failure.to_revision is None
        assert failure.error is not None
        assert "note" in failure.error
        assert (report.failed, report.upgraded, report.ok) == (1, len(TENANTS) - 1, False)
        assert await revision(config, broken) == FIRST
        for tenant in tenants:
            if tenant is not broken:
                assert await revision(config, tenant) == SECOND

        rerun = await upgrade(tenancy, script)

        assert outcomes(rerun) == dict.fromkeys(TENANTS, "skipped") | {broken.identifier: "failed"}


@per_tenant
async def test_concurrent_runners_migrate_each_tenant_exactly_once(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy, Tenancy(config) as other:
        for identifier in TENANTS:
            await tenancy.create_tenant(identifier)

        reports = await asyncio.gather(
            upgrade(tenancy, script, concurrency=2), upgrade(other, script, concurrency=3)
        )

        for identifier in TENANTS:
            results = sorted(outcomes(report)[identifier] for report in reports)
            assert results == ["skipped", "upgraded"], (identifier, reports)
        for tenant in await tenancy.list_tenants():
            assert await revision(config, tenant) == SECOND


@per_tenant
async def test_suspended_tenants_are_migrated_and_deleted_ones_are_not(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        for identifier in TENANTS:
            await tenancy.create_tenant(identifier)
        await tenancy.suspend_tenant("acme")
        deleted = await tenancy.delete_tenant("globex")

        report = await upgrade(tenancy, script)

        assert outcomes(report) == dict.fromkeys(set(TENANTS) - {"globex"}, "upgraded")
        assert await revision(config, deleted) is None


@per_tenant
async def test_identifiers_choose_the_tenants(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        for identifier in TENANTS:
            await tenancy.create_tenant(identifier)
        await tenancy.delete_tenant("hooli")

        report = await upgrade(tenancy, script, identifiers=["acme", "globex", "nobody", "hooli"])

        assert outcomes(report) == {
            "acme": "upgraded",
            "globex": "upgraded",
            "nobody": "failed",
            "hooli": "failed",
        }
        initech = await tenancy.get_tenant("initech")
        assert await revision(config, initech) is None


@pytest.mark.parametrize("isolation_case", [("row", "sqlite")], indirect=True)
async def test_row_isolation_migrates_the_shared_tables_once(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy, Tenancy(config) as other:
        for identifier in TENANTS:
            await tenancy.create_tenant(identifier)

        reports = await asyncio.gather(upgrade(tenancy, script), upgrade(other, script))

        assert sorted(m.outcome for r in reports for m in r.migrations) == ["skipped", "upgraded"]
        assert all(m.identifier is None for r in reports for m in r.migrations)
        assert await item_columns(config, None) == ["id", "tenant_id", "name", "note"]
        assert outcomes(await upgrade(tenancy, script)) == {None: "skipped"}


@per_tenant
async def test_a_held_tenant_lock_keeps_the_runner_out(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        tenant = await tenancy.create_tenant("acme")
        async with tenant_tables(config, tenant) as (conn, _schema):
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(tenant.id)}
                )
            else:
                await conn.execute(
                    text("SELECT GET_LOCK(:name, 0)"), {"name": named_lock(tenant.id)}
                )

            blocked = await upgrade(tenancy, script, lock_timeout=0.5)

        assert outcomes(blocked) == {"acme": "failed"}
        assert blocked.migrations[0].error is not None
        assert blocked.migrations[0].error.startswith("MigrationLockTimeout")
        assert await revision(config, tenant) is None
        assert outcomes(await upgrade(tenancy, script)) == {"acme": "upgraded"}


@pytest.mark.parametrize(
    "isolation_case",
    [pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres")],
    indirect=True,
)
async def test_postgres_schema_migrations_stay_in_the_tenant_schema(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        await upgrade(tenancy, script, concurrency=1)

        assert await item_columns(config, None) == []  # nothing in public
        async with tenancy.engine.connect() as conn:
            # The pool's connection carries no tenant search path after the migration.
            path = (await conn.execute(text("SHOW search_path"))).scalar_one()
        assert path == '"$user", public'


schema_on_postgres = pytest.mark.parametrize(
    "isolation_case",
    [pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres")],
    indirect=True,
)


@schema_on_postgres
async def test_the_worker_migrates_each_tenant_before_it_becomes_active(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    seen: list[tuple[str, TenantStatus]] = []
    async with Tenancy(config) as tenancy:

        async def migrate(tenant: Tenant) -> None:
            stored = await tenancy.get_tenant(tenant.identifier)
            assert stored is not None
            seen.append((tenant.identifier, stored.status))
            await migrate_tenant(tenancy, script, tenant)

        for identifier in TENANTS[:3]:
            await tenancy.create_tenant(identifier, provision=False)
        result = await ProvisioningWorker(tenancy, prepare=migrate).run(exit_when_idle=True)

        assert result.provisioned == 3
        assert {status for _, status in seen} == {TenantStatus.PROVISIONING}
        for tenant in await tenancy.list_tenants():
            assert tenant.status is TenantStatus.ACTIVE
            assert await revision(config, tenant) == SECOND
            assert await item_columns(config, tenant) == ["id", "tenant_id", "name", "note"]


@schema_on_postgres
async def test_a_failed_preparation_removes_the_new_storage_and_is_retried(
    isolation_case: tuple[str, str], script: Config
) -> None:
    config = empty_config(isolation_case)
    attempts = 0
    async with Tenancy(config) as tenancy:

        async def flaky(tenant: Tenant) -> None:
            nonlocal attempts
            attempts += 1
            await migrate_tenant(tenancy, script, tenant)
            if attempts == 1:
                raise RuntimeError("the first preparation fails after migrating")

        await tenancy.create_tenant("acme", provision=False)
        worker = ProvisioningWorker(tenancy, prepare=flaky, max_attempts=3)

        first = await worker.run_once()
        retried = await tenancy.get_tenant("acme")
        assert (first.retried, first.provisioned) == (1, 0)
        assert retried is not None
        assert retried.status is TenantStatus.PENDING
        async with tenant_tables(config, None) as (conn, _):
            assert await schema_exists(conn, retried.storage_name) is False  # nothing half-made

        second = await worker.run(exit_when_idle=True)
        active = await tenancy.get_tenant("acme")
        assert second.provisioned == 1
        assert active is not None
        assert active.status is TenantStatus.ACTIVE
        assert await revision(config, active) == SECOND

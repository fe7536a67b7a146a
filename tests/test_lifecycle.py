"""Lifecycle changes that race, repeat or reach past the metadata: each ends in one clear state.

* a restore made while a purge waits for in-flight work wins: data and record stay;
* a purge under row isolation empties every ``tenant_id`` table in the database, also tables that
  Alembic owns and no metadata names;
* two tenants cannot share one explicit database (a purge of one would wipe the other);
* a failed tenant can be retried (from Python and the CLI), deleted and purged, and provisioning
  never takes over storage that belongs to someone else;
* concurrent changes of one record: one wins, the other raises.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fastapi_tenancy import (
    InvalidTransition,
    Tenancy,
    TenantAlreadyExists,
    TenantStatus,
)
from fastapi_tenancy.cli import main
from fastapi_tenancy.isolation.inflight import InFlight
from fastapi_tenancy.isolation.ownership import StorageConflict
from fastapi_tenancy.worker import ProvisioningWorker
from tests.support.backends import isolation_config, schema_exists
from tests.support.models import Item
from tests.support.services import TEST_STORAGE_PREFIX

RACE_CASES = [
    pytest.param(("row", "sqlite"), id="row-sqlite"),
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
]


class SignallingInFlight(InFlight):
    """In-flight tracking that tells the test when a purge starts waiting for the work."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def drained(self, tenant_id: str) -> None:
        self.waiting.set()
        await super().drained(tenant_id)


async def add_items(tenancy: Tenancy, identifier: str, *names: str) -> None:
    async with tenancy.session(identifier) as session:
        session.add_all(Item(name=name) for name in names)
        await session.commit()


async def item_names(tenancy: Tenancy, identifier: str) -> list[str]:
    async with tenancy.session(identifier) as session:
        return sorted((await session.scalars(select(Item.name))).all())


@pytest.mark.parametrize("isolation_case", RACE_CASES, indirect=True)
async def test_a_restore_while_a_purge_drains_wins_and_keeps_data_and_record(
    isolation_case: tuple[str, str],
) -> None:
    tenancy = Tenancy(isolation_config(isolation_case))
    inflight = SignallingInFlight()
    tenancy.inflight = inflight
    async with tenancy:
        tenant = await tenancy.create_tenant("acme")
        await add_items(tenancy, "acme", "anvil")
        await tenancy.delete_tenant("acme")
        with inflight.track(tenant.id):  # work still running for the tenant holds the purge
            purge = asyncio.create_task(tenancy.purge_tenant("acme"))
            await inflight.waiting.wait()
            restored = await tenancy.restore_tenant("acme")
        with pytest.raises(InvalidTransition, match="changed while its purge waited"):
            await purge

        assert restored.status is TenantStatus.ACTIVE
        assert await tenancy.get_tenant("acme") == restored
        assert await item_names(tenancy, "acme") == ["anvil"]


async def test_a_purging_tenant_cannot_be_restored_and_a_second_purge_finishes(
    tmp_path: Path,
) -> None:
    config = isolation_config(("row", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        await add_items(tenancy, "acme", "anvil")
        deleted = await tenancy.delete_tenant("acme")
        # A purge that stopped half-way (the process died) leaves the record purging.
        await tenancy.store.update(deleted.model_copy(update={"status": TenantStatus.PURGING}))

        with pytest.raises(InvalidTransition, match="it is purging"):
            await tenancy.restore_tenant("acme")
        assert [t.identifier for t in await tenancy.list_tenants()] == []

        await tenancy.purge_tenant("acme")
        assert await tenancy.get_tenant("acme") is None


async def test_of_two_changes_made_from_the_same_read_only_one_is_stored(tmp_path: Path) -> None:
    config = isolation_config(("row", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    async with Tenancy(config) as tenancy:
        read = await tenancy.create_tenant("acme")
        suspended = read.model_copy(update={"status": TenantStatus.SUSPENDED})
        deleted = read.model_copy(update={"status": TenantStatus.DELETED})

        stored = await tenancy.store.update_if_unchanged(suspended, expected=read)
        assert stored is not None
        assert stored.updated_at > read.updated_at
        assert await tenancy.store.update_if_unchanged(deleted, expected=read) is None
        assert await tenancy.get_tenant("acme") == stored


ROW_CASES = [
    pytest.param(("row", "sqlite"), id="row-sqlite"),
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="row-mysql"),
]


async def create_alembic_owned_tables(engine: AsyncEngine) -> None:
    """Tables made by migrations, as Alembic would: no MetaData of the app's names them."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE invoices (id INTEGER PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL, "
                "total INTEGER NOT NULL)"
            )
        )
        await conn.execute(
            text(
                "CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY, "
                "tenant_id VARCHAR(64) NOT NULL, invoice_id INTEGER NOT NULL "
                "REFERENCES invoices (id))"
            )
        )
        await conn.execute(text("CREATE TABLE currencies (code VARCHAR(3) PRIMARY KEY)"))


@pytest.mark.parametrize("isolation_case", ROW_CASES, indirect=True)
async def test_a_row_purge_empties_every_tenant_table_alembic_owns(
    isolation_case: tuple[str, str],
) -> None:
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), tenant_tables="none")
    async with Tenancy(config) as tenancy:
        await create_alembic_owned_tables(tenancy.engine)
        gone = await tenancy.create_tenant("gone")
        kept = await tenancy.create_tenant("kept")
        async with tenancy.engine.begin() as conn:
            for n, tenant in enumerate([gone, kept]):
                await conn.execute(
                    text("INSERT INTO invoices VALUES (:id, :tenant, 10)"),
                    {"id": n, "tenant": tenant.id},
                )
                await conn.execute(
                    text("INSERT INTO invoice_lines VALUES (:id, :tenant, :id)"),
                    {"id": n, "tenant": tenant.id},
                )
            await conn.execute(text("INSERT INTO currencies VALUES ('EUR')"))

        await tenancy.delete_tenant("gone")
        await tenancy.purge_tenant("gone")

        async with tenancy.engine.connect() as conn:
            for table in ("invoices", "invoice_lines"):
                owners = (await conn.execute(text(f"SELECT tenant_id FROM {table}"))).scalars()
                assert list(owners) == [kept.id], table
            assert (await conn.execute(text("SELECT count(*) FROM currencies"))).scalar() == 1


@pytest.mark.parametrize(
    "isolation_case",
    [pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres")],
    indirect=True,
)
async def test_two_tenants_cannot_share_one_explicit_database(
    isolation_case: tuple[str, str],
) -> None:
    _, url = isolation_case
    async with Tenancy(isolation_config(isolation_case)) as tenancy:
        first = await tenancy.create_tenant("first", database_url=url)
        same_database = url.replace("postgres@", "other_user:secret@")
        with pytest.raises(TenantAlreadyExists, match="'first' already uses this database"):
            await tenancy.create_tenant("second", database_url=same_database)
        assert await tenancy.get_tenant("second") is None
        assert await tenancy.get_tenant("first") == first


SCHEMA_CASES = [
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="database-mysql"),
]


async def squat(tenancy: Tenancy, name: str | None, strategy: str) -> None:
    """Make storage with the tenant's name that is not the tenant's, holding a table."""
    assert name is not None
    postgres = tenancy.engine.dialect.name == "postgresql"
    quote = '"' if postgres else "`"
    keyword = "SCHEMA" if postgres and strategy == "schema" else "DATABASE"
    async with tenancy.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"CREATE {keyword} {quote}{name}{quote}"))
        if keyword == "SCHEMA" or not postgres:
            await conn.execute(text(f"CREATE TABLE {quote}{name}{quote}.precious (id INTEGER)"))
            return
    template = tenancy.config.database_url_template
    assert template is not None
    engine = create_async_engine(template.format(database=name))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE precious (id INTEGER)"))
    finally:
        await engine.dispose()


async def unsquat(tenancy: Tenancy, name: str | None, strategy: str) -> None:
    postgres = tenancy.engine.dialect.name == "postgresql"
    async with tenancy.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if postgres and strategy == "schema":
            await conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        elif postgres:
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        else:
            await conn.execute(text(f"DROP DATABASE `{name}`"))


@pytest.mark.parametrize("isolation_case", SCHEMA_CASES, indirect=True)
async def test_storage_of_someone_else_fails_provisioning_and_is_never_touched(
    isolation_case: tuple[str, str],
) -> None:
    strategy, _ = isolation_case
    async with Tenancy(isolation_config(isolation_case)) as tenancy:
        pending = await tenancy.create_tenant("acme", provision=False)
        await squat(tenancy, pending.storage_name, strategy)
        result = await ProvisioningWorker(tenancy, max_attempts=1).run(exit_when_idle=True)
        assert result.failed == 1
        failed = await tenancy.get_tenant("acme")
        assert failed is not None
        assert failed.status is TenantStatus.FAILED
        if strategy == "schema" or tenancy.engine.dialect.name != "postgresql":
            async with tenancy.engine.connect() as conn:
                assert await schema_exists(conn, pending.storage_name)
        with pytest.raises(StorageConflict, match="not marked as this tenant's"):
            await tenancy.isolation.provision(failed)
        await unsquat(tenancy, pending.storage_name, strategy)


@pytest.mark.postgres
@pytest.mark.parametrize("isolation_case", [("schema", "postgres")], indirect=True)
def test_a_failed_tenant_is_retried_from_the_cli_then_deleted_and_purged(
    isolation_case: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = isolation_case
    monkeypatch.setenv("TENANCY_DATABASE_URL", url)
    monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", "schema")
    monkeypatch.setenv("TENANCY_SCHEMA_PREFIX", TEST_STORAGE_PREFIX)
    monkeypatch.setenv("TENANCY_TENANT_METADATA", "tests.support.models:Base.metadata")
    config = isolation_config(isolation_case)

    async def fail_acme() -> str | None:
        async with Tenancy(config) as tenancy:
            pending = await tenancy.create_tenant("acme", provision=False)
            await squat(tenancy, pending.storage_name, "schema")
            assert (await ProvisioningWorker(tenancy, max_attempts=1).run_once()).failed == 1
            await unsquat(tenancy, pending.storage_name, "schema")  # the cause is fixed
            return pending.storage_name

    storage_name = asyncio.run(fail_acme())

    assert main(["tenants", "retry", "acme"]) == 0
    assert main(["tenants", "retry", "acme"]) == 1  # active now: nothing to retry

    async def check_active() -> None:
        async with Tenancy(config) as tenancy:
            acme = await tenancy.get_tenant("acme")
            assert acme is not None
            assert acme.status is TenantStatus.ACTIVE
            assert acme.storage_name == storage_name
            assert acme.provisioning_attempts == 1
            await add_items(tenancy, "acme", "anvil")
            assert await item_names(tenancy, "acme") == ["anvil"]

    asyncio.run(check_active())
    assert main(["tenants", "delete", "acme"]) == 0
    assert main(["tenants", "purge", "acme", "--yes"]) == 0

    async def check_gone() -> None:
        async with Tenancy(config) as tenancy:
            assert await tenancy.get_tenant("acme") is None
            async with tenancy.engine.connect() as conn:
                assert not await schema_exists(conn, storage_name)

    asyncio.run(check_gone())


async def test_a_failed_tenant_can_be_deleted_and_purged_without_a_retry(tmp_path: Path) -> None:
    config = isolation_config(("row", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    async with Tenancy(config) as tenancy:
        pending = await tenancy.create_tenant("acme", provision=False)
        [claimed] = await tenancy.store.claim_for_provisioning(
            limit=1, stale_before=pending.created_at
        )
        failed = await tenancy.store.update(
            claimed.model_copy(update={"status": TenantStatus.FAILED})
        )
        assert failed.status is TenantStatus.FAILED

        assert (await tenancy.delete_tenant("acme")).status is TenantStatus.DELETED
        await tenancy.purge_tenant("acme")
        assert await tenancy.get_tenant("acme") is None


async def test_update_replaces_name_and_metadata_and_emits_one_event(tmp_path: Path) -> None:
    config = isolation_config(("row", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    async with Tenancy(config) as tenancy:
        heard: list[tuple[str, str, object]] = []
        from fastapi_tenancy.observe import TenantChanged

        tenancy.hooks.subscribe(
            TenantChanged, lambda e: heard.append((e.action, e.tenant.name, e.tenant.metadata))
        )
        await tenancy.create_tenant("acme", metadata={"plan": "free"})
        assert (await tenancy.lookup.get_active("acme")).metadata == {"plan": "free"}

        updated = await tenancy.update_tenant("acme", name="Acme Inc.", metadata={"plan": "pro"})

        assert (updated.name, updated.metadata, updated.status) == (
            "Acme Inc.",
            {"plan": "pro"},
            TenantStatus.ACTIVE,
        )
        assert await tenancy.lookup.get_active("acme") == updated  # the cache forgot the old one
        assert heard[-1] == ("update", "Acme Inc.", {"plan": "pro"})
        assert json.dumps(updated.metadata) == '{"plan": "pro"}'


@pytest.mark.parametrize(
    "isolation_case",
    [*SCHEMA_CASES, pytest.param(("database", "sqlite"), id="database-sqlite")],
    indirect=True,
)
async def test_provisioning_again_reuses_the_storage_made_for_the_tenant(
    isolation_case: tuple[str, str],
) -> None:
    async with Tenancy(isolation_config(isolation_case)) as tenancy:
        tenant = await tenancy.create_tenant("acme")
        await add_items(tenancy, "acme", "anvil")

        # As a retry does after an attempt was interrupted once the storage existed.
        await tenancy.isolation.provision(tenant)

        assert await item_names(tenancy, "acme") == ["anvil"]


def test_update_from_the_cli_replaces_the_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    assert main(["tenants", "create", "acme", "--metadata", '{"plan": "free"}']) == 0
    assert main(["tenants", "update", "acme"]) == 2  # nothing to change is a usage error

    assert (
        main(["tenants", "update", "acme", "--name", "Acme", "--metadata", '{"plan": "pro"}']) == 0
    )

    capsys.readouterr()
    assert main(["tenants", "show", "acme", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["name"], shown["metadata"], shown["status"]) == (
        "Acme",
        {"plan": "pro"},
        "active",
    )


@pytest.mark.parametrize(
    "isolation_case",
    [pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres")],
    indirect=True,
)
async def test_purging_a_tenant_with_its_own_database_removes_its_rows_from_alembic_tables(
    isolation_case: tuple[str, str],
) -> None:
    _, url = isolation_case
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), tenant_tables="none")
    async with Tenancy(config) as tenancy:
        tenant = await tenancy.create_tenant("acme", database_url=url)
        # The tenant's database is the test database itself; Alembic made its tables.
        await create_alembic_owned_tables(tenancy.engine)
        async with tenancy.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO invoices VALUES (1, :tenant, 10)"), {"tenant": tenant.id}
            )
            await conn.execute(
                text("INSERT INTO invoice_lines VALUES (1, :tenant, 1)"), {"tenant": tenant.id}
            )

        await tenancy.delete_tenant("acme")
        await tenancy.purge_tenant("acme")

        async with tenancy.engine.connect() as conn:
            for table in ("invoices", "invoice_lines"):
                count = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar()
                assert count == 0, table


async def test_a_tenant_left_provisioning_by_a_dead_process_can_be_retried(tmp_path: Path) -> None:
    config = isolation_config(("row", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"))
    async with Tenancy(config) as tenancy:
        pending = await tenancy.create_tenant("acme", provision=False)
        # The process that claimed it died before finishing.
        await tenancy.store.claim_for_provisioning(limit=1, stale_before=pending.created_at)
        with pytest.raises(InvalidTransition, match="without progress for 600 s"):
            await tenancy.retry_tenant("acme")  # it may still be in progress somewhere

        await asyncio.sleep(0.05)
        retried = await tenancy.retry_tenant("acme", stale_after=0.01)

        assert retried.status is TenantStatus.ACTIVE
        assert retried.provisioning_attempts == 1

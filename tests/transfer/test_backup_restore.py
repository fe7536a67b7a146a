"""Per-tenant backup and restore: a round trip into an emptied server gives back every row."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError, TenantAlreadyExists
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.transfer.backup import backup_tenant
from fastapi_tenancy.transfer.restore import restore_tenant
from tests.support.backends import isolation_config
from tests.support.models import Base, Item
from tests.support.services import reset_database
from tests.transfer.data import AWKWARD, every_row, fill

ROUND_TRIPS = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="database-mysql"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    pytest.param(("row", "sqlite"), id="row-sqlite"),
]


async def empty(config: TenancyConfig) -> None:
    """Drop everything: tenant records, tenant tables, schemas and databases."""
    url = make_url(config.database_url)
    if url.get_backend_name() == "sqlite":
        for path in Path(url.database or "").parent.glob("*.db"):
            path.unlink()
    else:
        await reset_database(config.database_url)


@pytest.fixture
def tenancy_case(isolation_case: tuple[str, str]) -> TenancyConfig:
    return isolation_config(isolation_case)


@pytest.mark.parametrize("isolation_case", ROUND_TRIPS, indirect=True)
async def test_a_restore_into_an_emptied_server_gives_back_every_row(
    tenancy_case: TenancyConfig, tmp_path: Path
) -> None:
    config = tenancy_case
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        await tenancy.create_tenant("globex")
        await fill(tenancy, "acme", "a-")
        await fill(tenancy, "globex", "g-")
        before = await every_row(tenancy, "acme")
        manifest = await backup_tenant(tenancy, "acme", tmp_path / "acme.tar.gz")
        original = await tenancy.get_tenant("acme")
    assert manifest.tables["items"] == len(AWKWARD)
    await empty(config)  # the server is empty: no record, no tenant data
    async with Tenancy(config) as tenancy:
        assert await tenancy.get_tenant("acme") is None
        restored = await restore_tenant(tenancy, tmp_path / "acme.tar.gz", "acme")
        assert restored.status is TenantStatus.ACTIVE
        assert original is not None
        assert (restored.id, restored.storage_name) == (original.id, original.storage_name)
        assert await every_row(tenancy, "acme") == before
        # The restored tenant goes on working: new rows get fresh ids.
        async with tenancy.session("acme") as session:
            session.add(Item(name="after"))
            await session.commit()
        assert len(await every_row(tenancy, "acme")) == len(before) + 1
    await reset_database(config.database_url)


@pytest.mark.parametrize(
    "isolation_case",
    [
        pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
        pytest.param(("row", "sqlite"), id="row-sqlite"),
        pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="database-mysql"),
    ],
    indirect=True,
)
async def test_a_copy_restored_under_a_new_identifier_sits_beside_the_original(
    tenancy_case: TenancyConfig, tmp_path: Path
) -> None:
    async with Tenancy(tenancy_case) as tenancy:
        await tenancy.create_tenant("acme")
        await fill(tenancy, "acme", "a-")
        before = await every_row(tenancy, "acme")
        await backup_tenant(tenancy, "acme", tmp_path / "acme.tar.gz")
        with pytest.raises(TenantAlreadyExists):
            await restore_tenant(tenancy, tmp_path / "acme.tar.gz", "acme")
        if tenancy_case.isolation_strategy == "row":
            # Shared tables: the copy's keys must be free, so the original goes first.
            await tenancy.delete_tenant("acme")
            await tenancy.purge_tenant("acme")
        copy = await restore_tenant(tenancy, tmp_path / "acme.tar.gz", "acme", as_identifier="copy")
        assert copy.identifier == "copy"
        assert await every_row(tenancy, "copy") == before  # the row filter sees the new tenant id
        if tenancy_case.isolation_strategy != "row":
            assert await every_row(tenancy, "acme") == before
            async with tenancy.session("copy") as session:
                session.add(Item(name="copy only"))
                await session.commit()
            assert await every_row(tenancy, "acme") == before


async def test_a_tenant_of_a_server_pool_restores_where_the_new_configuration_places_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "old" / "s1").mkdir(parents=True)
    (tmp_path / "new").mkdir()
    pooled = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'old' / 'central.db'}",
        isolation_strategy="database",
        tenant_metadata=Base.metadata,
        database_url_template=f"sqlite+aiosqlite:///{tmp_path / 'old'}/{{database}}.db",
        database_servers=[
            {
                "name": "s1",
                "url": f"sqlite+aiosqlite:///{tmp_path / 'old' / 's1'}/{{database}}.db",
                "capacity": 5,
            }
        ],
    )
    async with Tenancy(pooled) as tenancy:
        tenant = await tenancy.create_tenant("acme")
        assert tenant.server == "s1"
        await fill(tenancy, "acme", "a-")
        before = await every_row(tenancy, "acme")
        await backup_tenant(tenancy, "acme", tmp_path / "acme.tar.gz")
    # Another deployment, with no server called s1 (no pool at all): the default server.
    plain = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'new' / 'central.db'}",
        isolation_strategy="database",
        tenant_metadata=Base.metadata,
        database_url_template=f"sqlite+aiosqlite:///{tmp_path / 'new'}/{{database}}.db",
    )
    async with Tenancy(plain) as tenancy:
        restored = await restore_tenant(tenancy, tmp_path / "acme.tar.gz", "acme")
        assert restored.server is None
        assert await every_row(tenancy, "acme") == before
        assert (tmp_path / "new" / f"{restored.storage_name}.db").exists()


@pytest.mark.parametrize(
    "isolation_case",
    [pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres")],
    indirect=True,
)
async def test_a_failed_restore_leaves_no_record_and_touches_no_foreign_schema(
    tenancy_case: TenancyConfig, tmp_path: Path
) -> None:
    async with Tenancy(tenancy_case) as tenancy:
        tenant = await tenancy.create_tenant("acme")
        await backup_tenant(tenancy, "acme", tmp_path / "acme.tar.gz")
        await tenancy.delete_tenant("acme")
        await tenancy.purge_tenant("acme")
        async with tenancy.engine.begin() as conn:  # someone else's schema, by that name
            await conn.execute(text(f'CREATE SCHEMA "{tenant.storage_name}"'))
            await conn.execute(text(f'CREATE TABLE "{tenant.storage_name}".theirs (id int)'))
        with pytest.raises(ConfigurationError, match="exists already: left untouched"):
            await restore_tenant(tenancy, tmp_path / "acme.tar.gz", "acme")
        assert await tenancy.get_tenant("acme") is None  # run it again once the name is free
        async with tenancy.engine.connect() as conn:
            theirs = await conn.scalar(text(f'SELECT count(*) FROM "{tenant.storage_name}".theirs'))
        assert theirs == 0

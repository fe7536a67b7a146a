"""Schema isolation: a schema (PostgreSQL) or database (MariaDB) per tenant, and nothing leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy import ConfigurationError, Tenancy, Tenant
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.isolation import SchemaIsolation, TenantTables
from fastapi_tenancy.isolation.naming import checked_storage_name, choose_storage_name
from fastapi_tenancy.isolation.schema import Binding
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config, schema_exists
from tests.support.models import Base, Item

SCHEMA_CASES = [
    pytest.param("postgres", "search_path", marks=pytest.mark.postgres, id="postgres-search_path"),
    pytest.param(
        "postgres", "translate_map", marks=pytest.mark.postgres, id="postgres-translate_map"
    ),
    pytest.param("mysql", "translate_map", marks=pytest.mark.mysql, id="mysql-translate_map"),
]
schema_databases = pytest.mark.parametrize(
    ("database_url", "binding"), SCHEMA_CASES, indirect=["database_url"]
)
postgres_only = pytest.mark.parametrize(
    ("database_url", "binding"), SCHEMA_CASES[:2], indirect=["database_url"]
)


@pytest.fixture
async def tenancy(database_url: str, binding: Binding) -> AsyncIterator[Tenancy]:
    config = isolation_config(("schema", database_url), schema_binding=binding)
    async with Tenancy(config) as tenancy:
        yield tenancy


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = central_engine(isolation_config(("schema", database_url)))
    yield engine
    await engine.dispose()


def schema_isolation(engine: AsyncEngine, binding: Binding) -> SchemaIsolation:
    return SchemaIsolation(
        engine, TenantTables(Base.metadata), prefix=TEST_STORAGE_PREFIX, binding=binding
    )


async def names(tenancy: Tenancy, identifier: str) -> list[str]:
    async with tenancy.session(identifier) as session:
        return sorted((await session.scalars(select(Item.name))).all())


@schema_databases
async def test_tenant_tables_never_fall_through_to_the_shared_schema(
    tenancy: Tenancy, engine: AsyncEngine
) -> None:
    acme = await tenancy.create_tenant("acme")
    # The same tables in the central schema, holding a row that even carries acme's id.
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(insert(Item).values(name="shared-row", tenant_id=acme.id))
    async with tenancy.session("acme") as session:
        session.add(Item(name="own-row"))
        await session.commit()
    assert await names(tenancy, "acme") == ["own-row"]


@schema_databases
async def test_storage_is_named_once_and_renaming_never_reroutes(tenancy: Tenancy) -> None:
    first = await tenancy.create_tenant("a-b")
    second = await tenancy.create_tenant("a--b")
    assert first.storage_name != second.storage_name
    for tenant in (first, second):
        assert tenant.storage_name is not None
        assert tenant.storage_name.startswith(TEST_STORAGE_PREFIX)
        assert len(tenant.storage_name.encode()) <= 63
    async with tenancy.session("a-b") as session:
        session.add(Item(name="kept"))
        await session.commit()
    await tenancy.store.update(first.model_copy(update={"identifier": "renamed"}))
    await tenancy.lookup.invalidate("a-b")
    renamed = await tenancy.get_tenant("renamed")
    assert renamed is not None
    assert renamed.storage_name == first.storage_name
    assert await names(tenancy, "renamed") == ["kept"]


@schema_databases
async def test_commit_then_read_stays_in_the_tenant_schema(tenancy: Tenancy) -> None:
    await tenancy.create_tenant("acme")
    await tenancy.create_tenant("beta")
    async with tenancy.session("acme") as session:
        session.add(Item(name="a1"))
        await session.commit()
        session.add(Item(name="a2"))
        await session.commit()
        assert sorted((await session.scalars(select(Item.name))).all()) == ["a1", "a2"]
    assert await names(tenancy, "beta") == []


@schema_databases
async def test_existing_schema_is_refused_and_left_alone(
    database_url: str, binding: Binding, engine: AsyncEngine
) -> None:
    isolation = schema_isolation(engine, binding)
    tenant = isolation.assign_storage(Tenant(identifier="squatter"))
    schema = tenant.storage_name
    assert schema is not None
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        await conn.execute(text(f"CREATE TABLE {schema}.precious (id INTEGER PRIMARY KEY)"))
    with pytest.raises(Exception, match="exists"):
        await isolation.provision(tenant)
    async with engine.begin() as conn:
        await conn.execute(text(f"SELECT count(*) FROM {schema}.precious"))


@schema_databases
async def test_failed_provisioning_drops_only_what_it_created(
    database_url: str, binding: Binding, engine: AsyncEngine
) -> None:
    isolation = schema_isolation(engine, binding)
    tenant = isolation.assign_storage(Tenant(identifier="doomed"))
    async with engine.begin() as conn:
        exists_before = await schema_exists(conn, tenant.storage_name)
    assert not exists_before
    # The schema is created, then the tables cannot be: their metadata does not import.
    broken = SchemaIsolation(
        engine, TenantTables("tests.nowhere:metadata"), prefix="tt_", binding=binding
    )
    with pytest.raises(ConfigurationError):
        await broken.provision(tenant)
    async with engine.begin() as conn:
        assert not await schema_exists(conn, tenant.storage_name)


@schema_databases
async def test_purge_drops_only_that_tenants_schema(tenancy: Tenancy, engine: AsyncEngine) -> None:
    gone = await tenancy.create_tenant("gone")
    kept = await tenancy.create_tenant("kept")
    await tenancy.delete_tenant("gone")
    await tenancy.purge_tenant("gone")
    async with engine.begin() as conn:
        assert not await schema_exists(conn, gone.storage_name)
        assert await schema_exists(conn, kept.storage_name)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
async def test_search_path_binding_confines_raw_sql_and_leaves_no_trace(
    database_url: str, engine: AsyncEngine
) -> None:
    tables = TenantTables(Base.metadata)
    isolation = SchemaIsolation(engine, tables, prefix=TEST_STORAGE_PREFIX, binding="search_path")
    acme = isolation.assign_storage(Tenant(identifier="acme"))
    beta = isolation.assign_storage(Tenant(identifier="beta"))
    for tenant in (acme, beta):
        await isolation.provision(tenant)
        async with isolation.session(tenant) as session:
            session.add(Item(name=f"{tenant.identifier}-row"))
            await session.commit()
            # After the commit a new transaction begins and the binding is applied again.
            raw = (await session.execute(text("SELECT name FROM items"))).scalars().all()
            assert raw == [f"{tenant.identifier}-row"]
    async with engine.connect() as conn:
        assert (await conn.execute(text("SHOW search_path"))).scalar() == '"$user", public'


@postgres_only
async def test_pooled_connections_carry_no_tenant(tenancy: Tenancy, engine: AsyncEngine) -> None:
    await tenancy.create_tenant("acme")
    async with tenancy.session("acme") as session:
        await session.scalars(select(Item))
    async with tenancy.engine.connect() as conn:
        assert (await conn.execute(text("SHOW search_path"))).scalar() == '"$user", public'


def test_unsafe_storage_names_are_refused_before_any_ddl() -> None:
    for name in ["public", "mysql", "pg_toast", "Tenant", "t; DROP SCHEMA public", "x" * 64, ""]:
        with pytest.raises(ConfigurationError):
            checked_storage_name(name)
    tenant = Tenant(identifier="a" * 63)
    assert len(choose_storage_name("tenant_", tenant)) <= 63

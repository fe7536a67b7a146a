"""Shared tables: models without `TenantScoped` live once, reachable from every tenant session."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload
from sqlalchemy.pool import NullPool

from fastapi_tenancy import ConfigurationError, Tenancy, TenantScoped
from fastapi_tenancy.isolation import CrossDatabaseStatement, shared_tables, tenant_tables
from fastapi_tenancy.isolation.tables import TABLE_KIND_KEY
from tests.support.backends import isolation_config
from tests.support.hypothesis_profiles import DEEP
from tests.support.services import TEST_STORAGE_PREFIX

# --- the rule, on generated model sets --------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Plan(Base):
    """Shared: one row per plan, for every tenant."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Customer(TenantScoped, Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    plan: Mapped[Plan] = relationship()


class Invoice(TenantScoped, Base):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    total: Mapped[int]


_examples = itertools.count()


@st.composite
def model_sets(draw: st.DrawFn, fresh_names: bool = False) -> tuple[MetaData, set[str], set[str]]:
    """A metadata of shared and scoped tables, and the names each kind should be.

    ``fresh_names``: names no earlier example used (shared tables of earlier examples stay in
    the central schema).
    """
    metadata = MetaData()
    p = f"h2x{next(_examples)}_" if fresh_names else ""
    shared_names = [f"{p}shared_{i}" for i in range(draw(st.integers(0, 3)))]
    for name in shared_names:
        Table(name, metadata, Column("id", Integer, primary_key=True), Column("label", String(20)))
    scoped: list[str] = []
    derived: list[str] = []
    for i in range(draw(st.integers(1, 3))):
        name = f"{p}scoped_{i}"
        columns: list[Any] = [
            Column("id", Integer, primary_key=True),
            Column("tenant_id", String(64), nullable=False),
        ]
        to_shared: bool = draw(st.booleans())
        if shared_names and to_shared:
            target = draw(st.sampled_from(shared_names))
            columns.append(Column("shared_id", ForeignKey(f"{target}.id")))
        to_scoped: bool = draw(st.booleans())
        if scoped and to_scoped:
            target = draw(st.sampled_from(scoped))
            columns.append(Column("parent_id", ForeignKey(f"{target}.id")))
        Table(name, metadata, *columns)
        scoped.append(name)
        if draw(st.booleans()):
            # No tenant_id, but it points at a tenant table: per-tenant rows all the same.
            child = f"{p}child_{i}"
            Table(
                child,
                metadata,
                Column("id", Integer, primary_key=True),
                Column("owner_id", ForeignKey(f"{name}.id")),
            )
            derived.append(child)
    return metadata, set(scoped) | set(derived), set(shared_names)


@given(model_sets())
def test_every_table_is_either_per_tenant_or_shared(
    case: tuple[MetaData, set[str], set[str]],
) -> None:
    metadata, tenant, shared = case
    assert {t.name for t in tenant_tables(metadata)} == tenant
    assert {t.name for t in shared_tables(metadata)} == shared
    # Parents before children: the order CREATE TABLE needs.
    seen: set[str] = set()
    for table in tenant_tables(metadata):
        parents = {fk.column.table.name for fk in table.foreign_keys}
        assert parents - seen - shared - {table.name} == set()
        seen.add(table.name)


def test_explicit_kinds_and_schemas_decide() -> None:
    metadata = MetaData()
    Table("settings", metadata, Column("tenant_id", String(64)), info={TABLE_KIND_KEY: "shared"})
    Table("audit", metadata, Column("id", Integer), info={TABLE_KIND_KEY: "tenant"})
    Table("countries", metadata, Column("tenant_id", String(64)), schema="reference")
    Table("tenancy_tenants", metadata, Column("id", String(64)))
    assert [t.name for t in tenant_tables(metadata)] == ["audit"]
    assert sorted(t.fullname for t in shared_tables(metadata)) == [
        "reference.countries",
        "settings",
    ]
    Table("broken", metadata, info={TABLE_KIND_KEY: "both"})
    with pytest.raises(ConfigurationError, match="'tenant' or 'shared'"):
        tenant_tables(metadata)


# --- on the servers ---------------------------------------------------------------------------

SCHEMA_CASES = [
    pytest.param("postgres", "search_path", marks=pytest.mark.postgres, id="postgres-search_path"),
    pytest.param(
        "postgres", "translate_map", marks=pytest.mark.postgres, id="postgres-translate_map"
    ),
    pytest.param("mysql", "translate_map", marks=pytest.mark.mysql, id="mysql-translate_map"),
]
DATABASE_CASES = [
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]


def _in_list(names: list[str]) -> Any:
    from sqlalchemy import bindparam

    return bindparam("names", value=names, expanding=True)


async def table_locations(
    conn: AsyncConnection, names: list[str], *, also: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """The schemas holding each table in ``names``, among those this test owns.

    Those are the central schema, ``also``, and the tenant storage of this run
    (``TEST_STORAGE_PREFIX``): on MariaDB information_schema spans the whole server, where other
    suites keep tables of the same names in their own databases.
    """
    owned = {central_schema(conn.engine.url.render_as_string(hide_password=False)), *also}
    statement = text(
        "SELECT table_name, table_schema FROM information_schema.tables WHERE table_name IN :names"
    ).bindparams(_in_list(names))
    found: dict[str, list[str]] = {name: [] for name in names}
    for name, schema in await conn.execute(statement):
        if str(schema) in owned or str(schema).startswith(TEST_STORAGE_PREFIX):
            found[str(name)].append(str(schema))
    return found


def central_schema(url: str) -> str:
    parsed = make_url(url)
    return "public" if parsed.get_backend_name() == "postgresql" else str(parsed.database)


@pytest.fixture
async def schema_tenancy(database_url: str, binding: str) -> AsyncIterator[Tenancy]:
    config = isolation_config(
        ("schema", database_url), tenant_metadata=Base.metadata, schema_binding=binding
    )
    async with Tenancy(config) as tenancy:
        yield tenancy


async def serve_plans_and_customers(tenancy: Tenancy) -> None:
    """Two tenants, each with a customer on a shared plan; the plans written once, centrally."""
    for identifier in ("acme", "globex"):
        await tenancy.create_tenant(identifier)
    async with tenancy.engine.begin() as conn:
        await conn.execute(insert(Plan), [{"id": 1, "name": "free"}, {"id": 2, "name": "pro"}])
    for identifier, plan in (("acme", 2), ("globex", 1)):
        async with tenancy.session(identifier) as session:
            session.add(Customer(name=f"{identifier}-customer", plan_id=plan))
            await session.commit()


@pytest.mark.parametrize(("database_url", "binding"), SCHEMA_CASES, indirect=["database_url"])
async def test_shared_tables_live_once_and_tenant_rows_join_them(
    schema_tenancy: Tenancy, database_url: str
) -> None:
    await serve_plans_and_customers(schema_tenancy)

    async with schema_tenancy.engine.connect() as conn:
        found = await table_locations(conn, ["plans", "customers", "invoices"])
    assert found["plans"] == [central_schema(database_url)]
    tenants = {t.storage_name for t in await schema_tenancy.list_tenants()}
    assert set(found["customers"]) == tenants == set(found["invoices"])
    assert len(found["customers"]) == 2

    for identifier, plan in (("acme", "pro"), ("globex", "free")):
        async with schema_tenancy.session(identifier) as session:
            joined = (await session.execute(select(Customer.name, Plan.name).join(Plan))).all()
            assert joined == [(f"{identifier}-customer", plan)]
            assert len((await session.scalars(select(Plan))).all()) == 2
            loaded = select(Customer).options(selectinload(Customer.plan))
            assert (await session.scalars(loaded)).one().plan.name == plan


@pytest.mark.postgres
@pytest.mark.parametrize(("database_url", "binding"), [SCHEMA_CASES[0]], indirect=["database_url"])
async def test_the_shared_schema_is_configurable(database_url: str, binding: str) -> None:
    config = isolation_config(
        ("schema", database_url),
        tenant_metadata=Base.metadata,
        schema_binding=binding,
        shared_schema="h2_shared",
    )
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        async with tenancy.engine.begin() as conn:
            await conn.execute(text("INSERT INTO h2_shared.plans (id, name) VALUES (1, 'pro')"))
            found = await table_locations(conn, ["plans"], also=("h2_shared",))
        assert found == {"plans": ["h2_shared"]}
        async with tenancy.session("acme") as session:
            session.add(Customer(name="c", plan_id=1))
            await session.commit()
            assert (await session.execute(select(Plan.name).join(Customer))).scalars().all() == [
                "pro"
            ]


@pytest.fixture
async def database_tenancy(database_url: str) -> AsyncIterator[Tenancy]:
    config = isolation_config(("database", database_url), tenant_metadata=Base.metadata)
    async with Tenancy(config) as tenancy:
        yield tenancy


async def tenant_table_names(tenancy: Tenancy, identifier: str) -> list[str]:
    tenant = await tenancy.get_tenant(identifier)
    assert tenant is not None
    assert tenant.storage_name is not None
    url = make_url(tenancy.config.database_url).set(database=tenant.storage_name)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return sorted(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", DATABASE_CASES, indirect=True)
async def test_under_database_isolation_shared_tables_stay_central(
    database_tenancy: Tenancy,
) -> None:
    await serve_plans_and_customers(database_tenancy)

    for identifier in ("acme", "globex"):
        assert await tenant_table_names(database_tenancy, identifier) == ["customers", "invoices"]
    async with database_tenancy.engine.connect() as conn:
        central = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "plans" in central
    assert "customers" not in central

    async with database_tenancy.session("acme") as session:
        # Shared tables are read through the central engine, tenant tables through the tenant's.
        assert sorted((await session.scalars(select(Plan.name))).all()) == ["free", "pro"]
        customer = (await session.scalars(select(Customer))).one()
        assert customer.name == "acme-customer"
        assert (await session.get(Plan, customer.plan_id)) is not None
        with pytest.raises(CrossDatabaseStatement, match=r"plans.*customers"):
            await session.execute(select(Customer.name, Plan.name).join(Plan))


# --- generated model sets on the servers ------------------------------------------------------


async def check_model_set(
    database_url: str, binding: str | None, case: tuple[MetaData, set[str], set[str]]
) -> None:
    """Shared tables exist once; each tenant reads and writes only its own scoped rows.

    ``binding`` None: database isolation.
    """
    metadata, expected_tenant, expected_shared = case
    n = next(_examples)
    if binding is None:
        config = isolation_config(("database", database_url), tenant_metadata=metadata)
    else:
        config = isolation_config(
            ("schema", database_url), tenant_metadata=metadata, schema_binding=binding
        )
    tenants = (f"a{n}", f"b{n}")
    names = sorted(expected_tenant | expected_shared)
    async with Tenancy(config) as tenancy:
        created = [await tenancy.create_tenant(identifier) for identifier in tenants]
        async with tenancy.engine.begin() as conn:
            for name in expected_shared:
                await conn.execute(insert(metadata.tables[name]), {"id": 1})
            if binding is not None:
                found = await table_locations(conn, names)
            else:
                central_tables = set(
                    await conn.run_sync(lambda sync: inspect(sync).get_table_names())
                )
        if binding is not None:
            central = central_schema(database_url)
            storage = {str(t.storage_name) for t in created}
            for name in expected_shared:
                assert found[name] == [central]
            for name in expected_tenant:
                assert sorted(found[name]) == sorted(storage)
        else:
            assert central_tables & set(names) == expected_shared
            for identifier in tenants:
                own = set(await tenant_table_names(tenancy, identifier))
                assert own & set(names) == expected_tenant

        scoped = [metadata.tables[name] for name in sorted(expected_tenant)]
        scoped = [table for table in scoped if "tenant_id" in table.c]
        for tenant in created:
            async with tenancy.session(tenant.identifier) as session:
                for table in sorted(scoped, key=lambda t: t.name):
                    values: dict[str, Any] = {"id": 1, "tenant_id": tenant.id}
                    if "shared_id" in table.c:
                        values["shared_id"] = 1
                    if "parent_id" in table.c:
                        values["parent_id"] = 1
                    await session.execute(insert(table), values)
                await session.commit()
        for tenant in created:
            async with tenancy.session(tenant.identifier) as session:
                for table in scoped:
                    rows = (await session.execute(select(table.c.tenant_id))).scalars().all()
                    assert rows == [tenant.id]


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=model_sets(fresh_names=True))
@pytest.mark.parametrize(("database_url", "binding"), SCHEMA_CASES, indirect=["database_url"])
async def test_generated_model_sets_keep_shared_tables_once_and_tenants_apart(
    database_url: str, binding: str, case: tuple[MetaData, set[str], set[str]]
) -> None:
    await check_model_set(database_url, binding, case)


@settings(
    max_examples=2,  # two databases per example: creating and dropping them is the cost
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=model_sets(fresh_names=True))
@pytest.mark.parametrize("database_url", DATABASE_CASES, indirect=True)
async def test_generated_model_sets_under_database_isolation(
    database_url: str, case: tuple[MetaData, set[str], set[str]]
) -> None:
    await check_model_set(database_url, None, case)


@pytest.mark.deep
@settings(DEEP, max_examples=60)
@given(case=model_sets(fresh_names=True))
@pytest.mark.parametrize(("database_url", "binding"), SCHEMA_CASES, indirect=["database_url"])
async def test_generated_model_sets_keep_shared_tables_once_and_tenants_apart_deep(
    database_url: str, binding: str, case: tuple[MetaData, set[str], set[str]]
) -> None:
    await check_model_set(database_url, binding, case)

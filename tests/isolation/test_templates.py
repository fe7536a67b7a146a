"""Provisioning from a template builds exactly what ``create_all`` builds, in one round trip."""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Sequence,
    String,
    Table,
    UniqueConstraint,
    event,
    func,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy
from fastapi_tenancy.isolation.servers import create_database
from tests.conftest import empty_database
from tests.support.backends import TEST_STORAGE_PREFIX, isolation_config

pytestmark = pytest.mark.postgres


class Kind(enum.Enum):
    retail = "retail"
    wholesale = "wholesale"


def app_metadata() -> MetaData:
    """Every kind of object a tenant's DDL can hold: types, sequences, keys, indexes, comments."""
    metadata = MetaData()
    Table(
        "customers",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", String(64), nullable=False, index=True),
        Column("email", String(200), nullable=False, comment="where receipts go"),
        Column("kind", Enum(Kind, name="customer_kind"), nullable=False),
        UniqueConstraint("tenant_id", "email", name="uq_customer_email"),
        comment="people who buy",
    )
    Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant_id", String(64), nullable=False),
        Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE")),
        Column("number", Integer, Sequence("order_number_seq"), nullable=False),
        Column("total", Numeric(12, 2), nullable=False, server_default="0"),
        Column("created_at", DateTime(timezone=True), server_default=func.now()),
        CheckConstraint("total >= 0", name="ck_order_total"),
        Index("ix_orders_customer_created", "customer_id", "created_at"),
        Index("ix_orders_number", "number", unique=True),
    )
    return metadata


def describe(sync: Connection, schema: str) -> dict[str, Any]:
    """Everything inspection says about ``schema``, with the schema's own name taken out."""
    inspector: Any = inspect(sync)  # PostgreSQL's inspector: it also lists enums

    def own(value: Any) -> Any:
        return repr(value).replace(schema, "<schema>")

    found: dict[str, Any] = {
        "tables": sorted(inspector.get_table_names(schema=schema)),
        "sequences": sorted(inspector.get_sequence_names(schema=schema)),
        "enums": own(sorted(inspector.get_enums(schema=schema), key=lambda e: e["name"])),
    }
    for table in found["tables"]:
        columns = inspector.get_columns(table, schema=schema)
        found[table] = {
            "columns": own([{**c, "type": str(c["type"])} for c in columns]),
            "pk": own(inspector.get_pk_constraint(table, schema=schema)),
            "fks": own(inspector.get_foreign_keys(table, schema=schema)),
            "indexes": own(sorted(inspector.get_indexes(table, schema=schema), key=repr)),
            "unique": own(inspector.get_unique_constraints(table, schema=schema)),
            "checks": own(inspector.get_check_constraints(table, schema=schema)),
            "comment": inspector.get_table_comment(table, schema=schema),
        }
    return found


async def reference_schema(tenancy: Tenancy, metadata: MetaData, schema: str) -> None:
    """``schema`` made the step-by-step way: ``CREATE SCHEMA``, then ``create_all`` in it."""
    async with tenancy.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        translated = await conn.execution_options(schema_translate_map={None: schema})
        await translated.run_sync(metadata.create_all)


async def described(tenancy: Tenancy, schema: str | None) -> dict[str, Any]:
    assert schema is not None
    async with tenancy.engine.connect() as conn:
        return await conn.run_sync(describe, schema)


async def test_a_template_provisioned_schema_matches_create_all(tmp_path: Path) -> None:
    metadata = app_metadata()
    async with empty_database("postgres", tmp_path) as url:
        config = isolation_config(("schema", url), tenant_metadata=metadata)
        async with Tenancy(config) as tenancy:
            statements: list[str] = []
            event.listen(
                tenancy.engine.sync_engine,
                "before_cursor_execute",
                lambda *args: statements.append(str(args[2])),
            )
            tenant = await tenancy.create_tenant("acme")
            # The DDL went as one script, one round trip, still heard by the statement events.
            ddl = [statement for statement in statements if "CREATE" in statement]
            assert len(ddl) == 1
            assert "CREATE SCHEMA" in ddl[0]
            assert "CREATE TABLE" in ddl[0]
            reference = f"{TEST_STORAGE_PREFIX}reference"
            await reference_schema(tenancy, metadata, reference)

            assert await described(tenancy, tenant.storage_name) == await described(
                tenancy, reference
            )


async def test_two_tenants_provisioned_at_once_each_get_every_table(tmp_path: Path) -> None:
    metadata = app_metadata()
    async with empty_database("postgres", tmp_path) as url:
        config = isolation_config(("schema", url), tenant_metadata=metadata)
        async with Tenancy(config) as tenancy:
            first, second = await asyncio.gather(
                tenancy.create_tenant("acme"), tenancy.create_tenant("globex")
            )
            reference = f"{TEST_STORAGE_PREFIX}reference"
            await reference_schema(tenancy, metadata, reference)
            expected = await described(tenancy, reference)

            assert await described(tenancy, first.storage_name) == expected
            assert await described(tenancy, second.storage_name) == expected


async def test_the_template_follows_tables_added_to_the_metadata(tmp_path: Path) -> None:
    metadata = app_metadata()
    async with empty_database("postgres", tmp_path) as url:
        config = isolation_config(("schema", url), tenant_metadata=metadata)
        async with Tenancy(config) as tenancy:
            before = await tenancy.create_tenant("acme")
            Table(
                "refunds",
                metadata,
                Column("id", Integer, primary_key=True),
                Column("tenant_id", String(64), nullable=False),
                Column("order_id", Integer, ForeignKey("orders.id")),
            )

            after = await tenancy.create_tenant("globex")

            assert "refunds" not in (await described(tenancy, before.storage_name))["tables"]
            assert "refunds" in (await described(tenancy, after.storage_name))["tables"]


async def test_a_schema_left_by_an_interrupted_attempt_is_completed(tmp_path: Path) -> None:
    metadata = app_metadata()
    async with empty_database("postgres", tmp_path) as url:
        config = isolation_config(("schema", url), tenant_metadata=metadata)
        async with Tenancy(config) as tenancy:
            tenant = await tenancy.create_tenant("acme")
            schema = tenant.storage_name
            async with tenancy.engine.begin() as conn:
                await conn.execute(text(f'DROP TABLE "{schema}".orders'))

            # The script fails on the existing schema; the step-by-step path completes it.
            await tenancy.isolation.provision(tenant)

            reference = f"{TEST_STORAGE_PREFIX}reference"
            await reference_schema(tenancy, metadata, reference)
            assert await described(tenancy, schema) == await described(tenancy, reference)


async def database_described(url: str, name: str | None) -> dict[str, Any]:
    assert name is not None
    engine = create_async_engine(make_url(url).set(database=name), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(describe, "public")
    finally:
        await engine.dispose()


async def test_a_database_copied_from_the_template_matches_create_all(tmp_path: Path) -> None:
    metadata = app_metadata()
    async with empty_database("postgres", tmp_path) as url:
        config = isolation_config(("database", url), tenant_metadata=metadata)
        assert config.database_url_template is not None
        async with Tenancy(config) as tenancy:
            first, second = await asyncio.gather(
                tenancy.create_tenant("acme"), tenancy.create_tenant("globex")
            )
            reference = f"{TEST_STORAGE_PREFIX}reference"
            reference_url = config.database_url_template.format(database=reference)
            await create_database(reference_url, reference)
            engine = create_async_engine(reference_url, poolclass=NullPool)
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            await engine.dispose()
            expected = await database_described(url, reference)

            assert await database_described(url, first.storage_name) == expected
            assert await database_described(url, second.storage_name) == expected
            async with tenancy.engine.connect() as conn:
                templates = (
                    await conn.execute(
                        text("SELECT datname, datallowconn FROM pg_database WHERE datname LIKE :p"),
                        {"p": f"{TEST_STORAGE_PREFIX}tpl%"},
                    )
                ).all()
            # One template, built once for both tenants, which nobody can connect to.
            assert [allowed for _name, allowed in templates] == [False]

            # Tables added to the metadata make a new template; the tenant gets them.
            Table(
                "refunds",
                metadata,
                Column("id", Integer, primary_key=True),
                Column("tenant_id", String(64), nullable=False),
            )
            third = await tenancy.create_tenant("initech")
            assert "refunds" in (await database_described(url, third.storage_name))["tables"]

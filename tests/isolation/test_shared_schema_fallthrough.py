"""The shared schema never answers for a tenant's table (PostgreSQL, ``search_path`` binding).

Tenant sessions find shared tables on the search path (``"<tenant>", "<shared_schema>"``). A
table of a tenant table's name in the shared schema (left by a single-tenant past, or a stray
copy) would then answer for a tenant whose own table or schema is missing: the fall-through to
``public`` this library never allows. Such a table keeps the shared schema off the path.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import ProgrammingError

from fastapi_tenancy import Tenancy
from tests.isolation.test_shared_tables import Base, Customer, Invoice, Plan
from tests.support.backends import isolation_config

pytestmark = pytest.mark.postgres

DECOY = "SHARED-SCHEMA-DECOY"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("stray", ["customers", "invoices"])
@pytest.mark.parametrize("damage", ["drop the table", "drop the schema"])
async def test_a_tenant_table_name_in_the_shared_schema_is_never_read_for_a_tenant(
    database_url: str, stray: str, damage: str
) -> None:
    config = isolation_config(
        ("schema", database_url), tenant_metadata=Base.metadata, schema_binding="search_path"
    )
    async with Tenancy(config) as tenancy:
        tenant = await tenancy.create_tenant("acme")
        schema = tenant.storage_name
        async with tenancy.engine.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE TABLE public.{stray} (id INTEGER PRIMARY KEY, name VARCHAR(50), "
                    "tenant_id VARCHAR(64), plan_id INTEGER, customer_id INTEGER, total INTEGER)"
                )
            )
            await conn.execute(
                text(f"INSERT INTO public.{stray} (id, name, tenant_id) VALUES (1, :d, :t)"),
                {"d": DECOY, "t": tenant.id},
            )
            if damage == "drop the table":
                await conn.execute(text(f'DROP TABLE "{schema}".{stray} CASCADE'))
            else:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))

    # A new process (runtime) looks at the shared schema before its first tenant session.
    async with Tenancy(config) as tenancy:
        model = Customer if stray == "customers" else Invoice
        async with tenancy.session("acme") as session:
            with pytest.raises(ProgrammingError, match="does not exist"):
                await session.execute(select(model))
        async with tenancy.session("acme") as session:
            # Shared tables are unreachable too (qualify them, or drop the stray table).
            with pytest.raises(ProgrammingError, match="does not exist"):
                await session.execute(select(Plan))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_without_a_stray_table_the_shared_schema_stays_on_the_path(
    database_url: str,
) -> None:
    config = isolation_config(
        ("schema", database_url), tenant_metadata=Base.metadata, schema_binding="search_path"
    )
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
    async with Tenancy(config) as tenancy:
        async with tenancy.session("acme") as session:
            assert (await session.scalars(select(Plan))).all() == []

"""Looking into a tenant's tables from outside the runner: columns, revision, tampering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import TenancyConfig, Tenant


@asynccontextmanager
async def tenant_tables(
    config: TenancyConfig, tenant: Tenant | None
) -> AsyncIterator[tuple[AsyncConnection, str | None]]:
    """A connection that reaches ``tenant``'s tables, and the schema that holds them."""
    url, schema = config.database_url, None
    if tenant is not None and config.isolation_strategy == "schema":
        schema = tenant.storage_name
    elif tenant is not None and config.isolation_strategy == "database":
        assert config.database_url_template is not None
        url = config.database_url_template.format(database=tenant.storage_name)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            yield conn, schema
    finally:
        await engine.dispose()


async def item_columns(config: TenancyConfig, tenant: Tenant | None) -> list[str]:
    async with tenant_tables(config, tenant) as (conn, schema):
        return await conn.run_sync(
            lambda sync: (
                [column["name"] for column in inspect(sync).get_columns("items", schema=schema)]
                if inspect(sync).has_table("items", schema=schema)
                else []
            )
        )


async def revision(config: TenancyConfig, tenant: Tenant | None) -> str | None:
    async with tenant_tables(config, tenant) as (conn, schema):
        if not await conn.run_sync(
            lambda sync: inspect(sync).has_table("alembic_version", schema=schema)
        ):
            return None
        table = f"{schema}.alembic_version" if schema else "alembic_version"
        found: str = (await conn.execute(text(f"SELECT version_num FROM {table}"))).scalar_one()
        return found


async def add_note_column(config: TenancyConfig, tenant: Tenant) -> None:
    """Tamper with ``tenant``: the column revision 2 adds is already there."""
    async with tenant_tables(config, tenant) as (conn, schema):
        table = f"{schema}.items" if schema else "items"
        await conn.execute(text(f"ALTER TABLE {table} ADD COLUMN note VARCHAR(100)"))

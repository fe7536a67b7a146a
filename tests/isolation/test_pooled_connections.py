"""Nothing one tenant's session leaves on a pooled connection reaches the next checkout.

The pool holds one connection (``database_pool_size=1``), so tenant B's session runs on the very
connection tenant A's session used (the PostgreSQL tests check the server process id). A's session
leaves what a handler can leave outside its transaction: a temporary table that shadows the tenant
table (PostgreSQL searches ``pg_temp`` first, SQLite its ``temp`` schema, MariaDB its temporary
tables), session-level settings, an advisory lock. A tenant session also never runs outside its
transaction-local binding: AUTOCOMMIT is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy import CrossTenantAccess, Tenancy, TenancyConfig
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.engines import reset_postgres_session
from fastapi_tenancy.isolation import SchemaIsolation, TenantTables
from tests.support.backends import TEST_STORAGE_PREFIX
from tests.support.models import Base, Item
from tests.support.rls import rls_database
from tests.support.services import POSTGRES_URL, require_server, reset_database

postgres = pytest.mark.postgres
VARIANTS = ["row", "row+rls", "schema"]
SHADOW = [
    text("CREATE TEMP TABLE items AS SELECT * FROM items"),
    text("UPDATE pg_temp.items SET tenant_id = :victim"),
]


def config(url: str, variant: str, **overrides: Any) -> TenancyConfig:
    settings: dict[str, Any] = {
        "database_url": url,
        "isolation_strategy": "schema" if variant == "schema" else "row",
        "row_level_security": variant == "row+rls",
        "tenant_metadata": Base.metadata,
        "schema_prefix": TEST_STORAGE_PREFIX,
        "database_pool_size": 1,
        "database_max_overflow": 0,
    }
    return TenancyConfig(**(settings | overrides))


@asynccontextmanager
async def tenancy_for(variant: str, **overrides: Any) -> AsyncIterator[Tenancy]:
    """A runtime on a one-connection pool, with tenants a and b holding rows of their own."""
    require_server("postgres", POSTGRES_URL, 5432)
    if variant == "row+rls":
        async with rls_database() as database:
            async with seeded(config(database.app_url, variant, **overrides)) as tenancy:
                yield tenancy
        return
    await reset_database(POSTGRES_URL)
    try:
        async with seeded(config(POSTGRES_URL, variant, **overrides)) as tenancy:
            yield tenancy
    finally:
        await reset_database(POSTGRES_URL)


@asynccontextmanager
async def seeded(settings: TenancyConfig) -> AsyncIterator[Tenancy]:
    async with Tenancy(settings) as tenancy:
        for identifier in ("a", "b"):
            await tenancy.create_tenant(identifier)
            async with tenancy.session(identifier) as session:
                session.add(Item(name=f"{identifier}'s item"))
                await session.commit()
        yield tenancy


async def backend_pid(session: AsyncSession) -> int:
    pid = await session.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


async def tenant_id(tenancy: Tenancy, identifier: str) -> str:
    tenant = await tenancy.get_tenant(identifier)
    assert tenant is not None
    return tenant.id


@postgres
@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_temporary_table_never_reaches_the_next_tenant(variant: str) -> None:
    async with tenancy_for(variant) as tenancy:
        victim = await tenant_id(tenancy, "b")
        async with tenancy.session("a") as session:
            pid = await backend_pid(session)
            # A's rows, relabelled as B's, in a table that would shadow B's `items`.
            for statement in SHADOW:
                await session.execute(statement, {"victim": victim})
            await session.commit()
        async with tenancy.session("b") as session:
            assert await backend_pid(session) == pid
            assert (await session.scalars(select(Item.name))).all() == ["b's item"]
            raw = text("SELECT name FROM items WHERE tenant_id = :victim")
            assert (await session.scalars(raw, {"victim": victim})).all() == ["b's item"]
            assert await session.scalar(text("SELECT to_regclass('pg_temp.items')")) is None


@postgres
@pytest.mark.parametrize("variant", VARIANTS)
async def test_session_settings_and_advisory_locks_never_reach_the_next_tenant(
    variant: str,
) -> None:
    async with tenancy_for(variant) as tenancy:
        async with tenancy.session("a") as session:
            pid = await backend_pid(session)
            await session.execute(text("SET application_name = 'left by a'"))
            await session.execute(text("SET search_path = public"))
            await session.execute(text("SELECT pg_advisory_lock(4242)"))
            await session.commit()
        async with tenancy.session("b") as session:
            assert await backend_pid(session) == pid
            assert await session.scalar(text("SHOW application_name")) != "left by a"
            locks = text(
                "SELECT count(*) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            assert await session.scalar(locks) == 0
            assert (await session.scalars(select(Item.name))).all() == ["b's item"]


@postgres
async def test_a_temporary_table_never_shadows_the_tenants_table_under_search_path() -> None:
    async with tenancy_for("schema") as tenancy:
        async with tenancy.session("a") as session:
            await session.execute(text("CREATE TEMP TABLE items (LIKE items)"))
            # pg_temp is searched last: the tenant's table is still the one named `items`.
            assert (await session.scalars(text("SELECT name FROM items"))).all() == ["a's item"]


@postgres
@pytest.mark.parametrize("variant", ["row+rls", "schema"])
async def test_a_tenant_session_refuses_autocommit(variant: str) -> None:
    async with tenancy_for(variant) as tenancy:
        async with tenancy.session("a") as session:
            with pytest.raises(CrossTenantAccess, match="AUTOCOMMIT"):
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@postgres
async def test_autocommit_writes_never_land_in_public_under_search_path() -> None:
    async with tenancy_for("schema") as tenancy:
        async with tenancy.engine.begin() as conn:
            # A table of the same name in public: where an unbound write would go.
            await conn.run_sync(Base.metadata.create_all)
        autocommit = tenancy.engine.execution_options(isolation_level="AUTOCOMMIT")
        tenant = await tenancy.get_tenant("a")
        assert tenant is not None
        isolation = SchemaIsolation(
            autocommit,
            TenantTables(Base.metadata),
            prefix=TEST_STORAGE_PREFIX,
            binding="search_path",
        )
        async with isolation.session(tenant) as session:
            session.add(Item(name="autocommitted"))
            with pytest.raises(CrossTenantAccess, match="AUTOCOMMIT"):
                await session.commit()
        async with tenancy.engine.connect() as conn:
            assert (await conn.scalars(text("SELECT name FROM public.items"))).all() == []


def test_behind_pgbouncer_the_pool_leaves_the_reset_to_pgbouncer() -> None:
    url = "postgresql+asyncpg://app@db/app"
    direct = central_engine(TenancyConfig(database_url=url))
    bounced = central_engine(TenancyConfig(database_url=url, database_pgbouncer=True))
    assert event.contains(direct.sync_engine, "reset", reset_postgres_session)
    assert not event.contains(bounced.sync_engine, "reset", reset_postgres_session)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_temporary_objects_and_pragmas_never_reach_the_next_tenant(
    database_url: str,
) -> None:
    async with seeded(config(database_url, "row")) as tenancy:
        victim = await tenant_id(tenancy, "b")
        async with tenancy.session("a") as session:
            await session.execute(text("CREATE TEMP TABLE items AS SELECT * FROM main.items"))
            await session.execute(
                text("UPDATE temp.items SET tenant_id = :victim"), {"victim": victim}
            )
            await session.execute(
                text("CREATE TEMP TRIGGER spy AFTER INSERT ON main.items BEGIN SELECT 1; END")
            )
            await session.commit()
            await session.execute(text("PRAGMA foreign_keys=OFF"))
            await session.commit()
        async with tenancy.session("b") as session:
            assert (await session.scalars(select(Item.name))).all() == ["b's item"]
            assert await session.scalar(text("SELECT count(*) FROM temp.sqlite_master")) == 0
            assert await session.scalar(text("PRAGMA foreign_keys")) == 1


@pytest.mark.parametrize(
    "database_url", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True
)
async def test_mariadb_connection_left_with_session_state_is_replaced(database_url: str) -> None:
    async with seeded(config(database_url, "row")) as tenancy:
        victim = await tenant_id(tenancy, "b")
        connection_id = text("SELECT CONNECTION_ID()")
        async with tenancy.session("a") as session:
            first = await session.scalar(connection_id)
            # Ordinary statements leave nothing: UPDATE ... SET, an address in a literal.
            await session.execute(update(Item).values(name="a's item"))
            await session.execute(text("UPDATE items SET name = name WHERE name <> 'a@b.example'"))
            await session.commit()
        async with tenancy.session("a") as session:
            # A connection without session state is reused as it is.
            assert await session.scalar(connection_id) == first
            await session.execute(text("CREATE TEMPORARY TABLE items AS SELECT * FROM items"))
            await session.execute(text("UPDATE items SET tenant_id = :victim"), {"victim": victim})
            await session.execute(text("SET @left_by_a = 'a secret'"))
            await session.commit()
        async with tenancy.session("b") as session:
            assert await session.scalar(connection_id) != first
            assert (await session.scalars(select(Item.name))).all() == ["b's item"]
            assert await session.scalar(text("SELECT @left_by_a")) is None

"""PostgreSQL row-level security under row isolation, with real roles and real policies.

The app logs in as a role that is neither superuser, BYPASSRLS nor owner (see
tests/support/rls.py), so PostgreSQL applies the policies. Raw SQL, which the ORM filter never
sees, is what these tests use to read and write: whatever confines it is the database.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from fastapi_tenancy import (
    ConfigurationError,
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    get_current_tenant,
    get_tenant_session,
)
from fastapi_tenancy.isolation.rls import POLICY_NAME, TENANT_SETTING
from fastapi_tenancy.migrations.rls import (
    apply_policies,
    enable_row_level_security,
    enable_statements,
    remove_policies,
)
from fastapi_tenancy.models import Tenant
from tests.support.models import Base, Item
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.rls import APP_ROLE, OWNER_ROLE, RlsDatabase, rls_database
from tests.support.traffic import assert_each_tenant_owns_exactly, mixed_traffic

postgres = pytest.mark.postgres

NOTES = Base.metadata.tables["notes"]
SELECT_ITEMS = text("SELECT name, tenant_id FROM items ORDER BY id")
INSERT_ITEM = text("INSERT INTO items (name, tenant_id) VALUES (:name, :tenant_id)")


def rls_config(url: str, **overrides: Any) -> TenancyConfig:
    settings: dict[str, Any] = {
        "database_url": url,
        "isolation_strategy": "row",
        "tenant_metadata": Base.metadata,
        "row_level_security": True,
    }
    return TenancyConfig(**(settings | overrides))


@pytest.fixture
async def database() -> AsyncIterator[RlsDatabase]:
    async with rls_database() as database:
        yield database


@pytest.fixture
async def tenancy(database: RlsDatabase) -> AsyncIterator[Tenancy]:
    """The app's runtime, logged in as the app role, with tenants a and b holding two rows each."""
    async with Tenancy(rls_config(database.app_url)) as tenancy:
        for identifier in ("a", "b"):
            await tenancy.create_tenant(identifier)
            async with tenancy.session(identifier) as session:
                session.add_all(Item(name=f"{identifier}:{n}") for n in range(2))
                await session.commit()
        yield tenancy


async def raw_rows(session: AsyncSession) -> list[tuple[str, str]]:
    return [(row.name, row.tenant_id) for row in await session.execute(SELECT_ITEMS)]


async def tenant_id(tenancy: Tenancy, identifier: str) -> str:
    tenant = await tenancy.get_tenant(identifier)
    assert tenant is not None
    return tenant.id


# The binding and the policies.


@postgres
async def test_raw_sql_sees_only_the_sessions_tenant_also_after_commit(tenancy: Tenancy) -> None:
    a = await tenant_id(tenancy, "a")
    async with tenancy.session("a") as session:
        assert await raw_rows(session) == [("a:0", a), ("a:1", a)]
        await session.execute(INSERT_ITEM, {"name": "a:2", "tenant_id": a})
        await session.commit()
        # A new transaction on a connection the pool may have given anyone: bound again.
        assert await raw_rows(session) == [("a:0", a), ("a:1", a), ("a:2", a)]
        await session.commit()
        # Core statements on the Table bypass the ORM filter too.
        assert await session.scalar(select(func.count()).select_from(Item.__table__)) == 3
    async with tenancy.session("b") as session:
        assert [name for name, _ in await raw_rows(session)] == ["b:0", "b:1"]


@postgres
async def test_raw_writes_to_another_tenant_are_refused_or_match_nothing(
    tenancy: Tenancy,
) -> None:
    b = await tenant_id(tenancy, "b")
    async with tenancy.session("a") as session:
        with pytest.raises(DBAPIError, match="row-level security policy"):
            await session.execute(INSERT_ITEM, {"name": "forged", "tenant_id": b})
        await session.rollback()
        # Moving an own row to another tenant fails WITH CHECK as well.
        with pytest.raises(DBAPIError, match="row-level security policy"):
            await session.execute(text("UPDATE items SET tenant_id = :b"), {"b": b})
        await session.rollback()
        foreign = {"b": b}
        updated = await session.execute(
            text("UPDATE items SET name = 'taken' WHERE tenant_id = :b"), foreign
        )
        deleted = await session.execute(text("DELETE FROM items WHERE tenant_id = :b"), foreign)
        assert (updated.rowcount, deleted.rowcount) == (0, 0)  # type: ignore[attr-defined]
        await session.commit()
    async with tenancy.session("b") as session:
        assert [name for name, _ in await raw_rows(session)] == ["b:0", "b:1"]


@postgres
async def test_a_transaction_without_a_tenant_sees_and_writes_nothing(
    database: RlsDatabase,
) -> None:
    # One pooled connection: the plain transaction below reuses the tenant session's connection.
    config = rls_config(database.app_url, database_pool_size=1, database_max_overflow=0)
    async with Tenancy(config) as tenancy:
        tenant = await tenancy.create_tenant("a")
        async with tenancy.session("a") as session:
            await session.execute(INSERT_ITEM, {"name": "a:0", "tenant_id": tenant.id})
            await session.commit()
            assert len(await raw_rows(session)) == 1
        async with tenancy.engine.connect() as conn:
            # Unset in this transaction: '' after the last local value ended, NULL on a fresh one.
            assert await conn.scalar(text(f"SELECT current_setting('{TENANT_SETTING}', true)")) in (
                "",
                None,
            )
            assert await conn.scalar(text("SELECT count(*) FROM items")) == 0
            with pytest.raises(DBAPIError, match="row-level security policy"):
                await conn.execute(INSERT_ITEM, {"name": "stray", "tenant_id": tenant.id})
    # A connection that never held a tenant sees nothing either.
    fresh = create_async_engine(database.app_url, poolclass=NullPool)
    try:
        async with fresh.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM items")) == 0
    finally:
        await fresh.dispose()


@postgres
async def test_concurrent_tenants_on_a_small_pool_never_see_each_other(
    database: RlsDatabase,
) -> None:
    config = rls_config(database.app_url, database_pool_size=2, database_max_overflow=1)
    identifiers = [f"t{n}" for n in range(6)]
    async with Tenancy(config) as tenancy:
        ids = {i: (await tenancy.create_tenant(i)).id for i in identifiers}
        rng = random.Random(6)
        plan = [rng.choice(identifiers) for _ in range(150)]
        written = dict.fromkeys(identifiers, 0)

        async def work(identifier: str, n: int) -> None:
            async with tenancy.session(identifier) as session:
                await session.execute(
                    INSERT_ITEM, {"name": f"{identifier}:{n}", "tenant_id": ids[identifier]}
                )
                await session.commit()
                await asyncio.sleep(0)
                for name, owner in await raw_rows(session):
                    assert owner == ids[identifier], (identifier, name, owner)
                    assert name.startswith(identifier + ":"), (identifier, name)
            written[identifier] += 1

        await asyncio.gather(*(work(i, n) for n, i in enumerate(plan)))
        for identifier in identifiers:
            async with tenancy.session(identifier) as session:
                assert len(await raw_rows(session)) == written[identifier]


@postgres
async def test_purge_deletes_the_tenants_rows_under_the_policy(
    tenancy: Tenancy, database: RlsDatabase
) -> None:
    await tenancy.delete_tenant("a")
    await tenancy.purge_tenant("a")
    b = await tenant_id(tenancy, "b")
    # The superuser is not subject to the policies: it sees every tenant's rows.
    admin = create_async_engine(database.superuser_url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            owners = (await conn.scalars(text("SELECT tenant_id FROM items"))).all()
    finally:
        await admin.dispose()
    assert owners == [b, b]


# Through PgBouncer in transaction mode: every transaction may land on another server connection.


def raw_sql_app(config: TenancyConfig) -> FastAPI:
    """The traffic helper's app (tests/support/apps.py), reading and writing with raw SQL only."""
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=config)

    @app.get("/items")
    async def list_items(
        session: AsyncSession = Depends(get_tenant_session),
    ) -> list[dict[str, str]]:
        return [{"name": n, "tenant_id": t} for n, t in await raw_rows(session)]

    @app.post("/items")
    async def add_then_list(
        name: str,
        session: AsyncSession = Depends(get_tenant_session),
        tenant: Tenant = Depends(get_current_tenant),
    ) -> list[dict[str, str]]:
        await session.execute(INSERT_ITEM, {"name": name, "tenant_id": tenant.id})
        await session.commit()
        await asyncio.sleep(0)
        await session.execute(INSERT_ITEM, {"name": name + "-again", "tenant_id": tenant.id})
        await session.commit()
        return [{"name": n, "tenant_id": t} for n, t in await raw_rows(session)]

    return app


@pytest.fixture
def app_pgbouncer(database: RlsDatabase) -> Iterator[PgBouncer]:
    with running_pgbouncer(database.app_url) as bouncer:
        yield bouncer


@postgres
async def test_raw_sql_stays_confined_through_pgbouncer_in_transaction_mode(
    app_pgbouncer: PgBouncer,
) -> None:
    config = rls_config(app_pgbouncer.url, database_pgbouncer=True)
    app = raw_sql_app(config)
    async with LifespanManager(app):
        tenancy: Tenancy = app.state.tenancy
        ids = {i: (await tenancy.create_tenant(i)).id for i in (f"p{n}" for n in range(5))}
        writes, failures = await mixed_traffic(app, ids, requests=150, concurrency=20)
        assert [repr(failure) for failure in failures] == []
        await assert_each_tenant_owns_exactly(tenancy, ids, writes)


# The start-up check: refuse every role and table PostgreSQL would not confine.


async def refusal(url: str) -> str:
    tenancy = Tenancy(rls_config(url))
    try:
        with pytest.raises(ConfigurationError) as caught:
            await tenancy.start()
    finally:
        await tenancy.close()
    return str(caught.value)


@postgres
async def test_start_refuses_a_superuser(database: RlsDatabase) -> None:
    message = await refusal(database.superuser_url)
    assert "superuser" in message
    assert "CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS" in message


@postgres
async def test_start_refuses_a_bypassrls_role(database: RlsDatabase) -> None:
    message = await refusal(database.bypass_url)
    assert "BYPASSRLS" in message
    assert "NOBYPASSRLS" in message
    assert "superuser" not in message


@postgres
async def test_start_refuses_the_table_owner_and_its_members(database: RlsDatabase) -> None:
    message = await refusal(database.owner_url)
    assert f"{OWNER_ROLE!r} owns table 'items'" in message
    assert "let another role own the tables" in message
    admin = create_async_engine(database.superuser_url, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'GRANT "{OWNER_ROLE}" TO "{APP_ROLE}"'))
    finally:
        await admin.dispose()
    message = await refusal(database.app_url)
    assert f"{APP_ROLE!r} is a member of {OWNER_ROLE!r}, which owns table 'notes'" in message


@postgres
async def test_start_refuses_a_table_without_the_policy(database: RlsDatabase) -> None:
    owner = create_async_engine(database.owner_url, poolclass=NullPool)
    try:
        async with owner.begin() as conn:
            await conn.run_sync(remove_policies, [NOTES])
        message = await refusal(database.app_url)
        assert "table 'notes': row-level security is not enabled" in message
        assert "not forced" in message
        assert f"policy {POLICY_NAME!r} is missing" in message
        assert "'items'" not in message
        assert "fastapi-tenancy rls enable" in message
        # A policy of that name that does not read the setting is no better.
        async with owner.begin() as conn:
            await conn.run_sync(apply_policies, [NOTES])
            await conn.execute(text(f'ALTER POLICY "{POLICY_NAME}" ON notes USING (true)'))
        message = await refusal(database.app_url)
        assert f"does not compare tenant_id with {TENANT_SETTING}" in message
    finally:
        await owner.dispose()


@postgres
async def test_start_refuses_another_permissive_policy_that_widens_access(
    database: RlsDatabase,
) -> None:
    owner = create_async_engine(database.owner_url, poolclass=NullPool)
    try:
        async with owner.begin() as conn:
            await conn.execute(text("CREATE POLICY everyone ON items USING (true)"))
    finally:
        await owner.dispose()
    message = await refusal(database.app_url)
    assert "other permissive policies" in message
    assert "'everyone'" in message


@postgres
async def test_start_refuses_missing_tables() -> None:
    async with rls_database() as database:
        admin = create_async_engine(database.superuser_url, poolclass=NullPool)
        try:
            async with admin.begin() as conn:
                await conn.execute(text("DROP TABLE notes"))
        finally:
            await admin.dispose()
        message = await refusal(database.app_url)
    assert "tenant table 'notes' does not exist" in message


@postgres
async def test_a_refused_start_leaves_no_connection_open(database: RlsDatabase) -> None:
    tenancy = Tenancy(rls_config(database.superuser_url))
    with pytest.raises(ConfigurationError, match="superuser"):
        async with tenancy:
            pass
    pool = tenancy.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == pool.checkedout() == 0


@postgres
async def test_start_accepts_the_app_role(database: RlsDatabase) -> None:
    async with Tenancy(rls_config(database.app_url)) as tenancy:
        assert tenancy.started


# Policy generation.


async def policies(url: str) -> list[tuple[str, str, bool, bool]]:
    admin = create_async_engine(url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, p.polname, c.relrowsecurity, c.relforcerowsecurity "
                    "FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid ORDER BY 1"
                )
            )
            return [(r[0], r[1], r[2], r[3]) for r in rows]
    finally:
        await admin.dispose()


@postgres
async def test_enabling_twice_keeps_one_policy_per_table(database: RlsDatabase) -> None:
    expected = [("items", POLICY_NAME, True, True), ("notes", POLICY_NAME, True, True)]
    assert await policies(database.superuser_url) == expected
    owner = create_async_engine(database.owner_url, poolclass=NullPool)
    try:
        for _ in range(2):
            async with owner.begin() as conn:
                ran = await conn.run_sync(
                    lambda sync: enable_row_level_security(sync, Base.metadata)
                )
            assert len(ran) == 8
        assert await policies(database.superuser_url) == expected
    finally:
        await owner.dispose()
    async with Tenancy(rls_config(database.app_url)) as tenancy:
        assert tenancy.started


@postgres
async def test_the_migration_helper_takes_an_alembic_style_bind_provider(
    database: RlsDatabase,
) -> None:
    owner = create_async_engine(database.owner_url, poolclass=NullPool)
    try:
        async with owner.begin() as conn:
            await conn.run_sync(remove_policies, Base.metadata)

            def migrate(sync: Any) -> list[str]:
                class Op:  # what `alembic.op` offers a migration
                    def get_bind(self) -> Any:
                        return sync

                return enable_row_level_security(Op(), ["items", "notes"])

            await conn.run_sync(migrate)
    finally:
        await owner.dispose()
    assert [row[:2] for row in await policies(database.superuser_url)] == [
        ("items", POLICY_NAME),
        ("notes", POLICY_NAME),
    ]


def dialect(name: str) -> Dialect:
    return make_url(f"{name}://").get_dialect()()


def test_policy_statements_quote_names_and_read_the_setting() -> None:
    statements = enable_statements(dialect("postgresql"), 'odd "name"')
    assert statements[0] == 'ALTER TABLE "odd ""name""" ENABLE ROW LEVEL SECURITY'
    assert statements[1] == 'ALTER TABLE "odd ""name""" FORCE ROW LEVEL SECURITY'
    condition = f"\"tenant_id\" = NULLIF(current_setting('{TENANT_SETTING}', true), '')"
    assert statements[3].endswith(f"USING ({condition}) WITH CHECK ({condition})")


def test_setting_and_policy_names_are_plain_identifiers() -> None:
    # Both are written into the DDL and the binding statement as they are.
    assert re.fullmatch(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*", TENANT_SETTING)
    assert re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", POLICY_NAME)


def test_policy_statements_refuse_tables_without_tenant_id_and_other_databases() -> None:
    with pytest.raises(ConfigurationError, match="no tenant_id column"):
        enable_statements(dialect("postgresql"), Base.metadata.tables["plans"])
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        enable_statements(dialect("sqlite"), "items")


# Configuration.


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"isolation_strategy": "schema"}, "applies to isolation_strategy 'row' only"),
        ({"database_url": "sqlite+aiosqlite:///:memory:"}, "needs PostgreSQL"),
        ({"database_url": "mysql+aiomysql://root@127.0.0.1/test"}, "needs PostgreSQL"),
    ],
)
def test_config_refuses_rls_outside_row_isolation_on_postgresql(
    settings: dict[str, str], complaint: str
) -> None:
    base: dict[str, Any] = {
        "database_url": "postgresql+asyncpg://app@db/app",
        "row_level_security": True,
    }
    with pytest.raises(ConfigurationError, match=complaint):
        TenancyConfig(**(base | settings))


def test_config_reads_rls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", "postgresql+asyncpg://app@db/app")
    monkeypatch.setenv("TENANCY_ROW_LEVEL_SECURITY", "true")
    assert TenancyConfig().row_level_security is True

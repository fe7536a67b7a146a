"""Row isolation: every ORM statement on a TenantScoped model is confined to one tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import aliased, selectinload

from fastapi_tenancy import CrossTenantAccess, Tenant, TenantContextMissing
from fastapi_tenancy.isolation import RowIsolation, TenantSession, TenantTables
from tests.support.backends import DATABASES, all_databases
from tests.support.models import Base, Item, Note, Plan
from tests.support.module_database import emptied_row_isolation, module_engine

A = Tenant(identifier="tenant-a")
B = Tenant(identifier="tenant-b")

# The statement tests of a backend share one database, its tables created once; `isolation` puts
# the seeded rows back before every test. The tests of table creation take a fresh database each
# (`all_databases`, `own_loop`).
pytestmark = pytest.mark.asyncio(loop_scope="module")


# With `all_databases`: an empty database of every backend for the test alone, used in the test's
# own event loop.
own_loop = pytest.mark.asyncio(loop_scope="function")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DATABASES)
async def shared_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    """The module's database of one backend, with the test models' tables."""
    async with module_engine(request.param, tmp_path_factory, "row") as engine:
        yield engine


@pytest_asyncio.fixture(loop_scope="module")
async def isolation(shared_engine: AsyncEngine) -> RowIsolation:
    """A new `RowIsolation` over the seeded rows only: what an earlier test wrote is deleted."""
    isolation = await emptied_row_isolation(shared_engine, Base.metadata, A)
    for tenant, names in ((A, ["a1", "a2"]), (B, ["b1"])):
        async with isolation.session(tenant) as session:
            session.add_all(Item(name=name, notes=[Note(body=f"{name}-note")]) for name in names)
            await session.commit()
    return isolation


async def names(session: AsyncSession) -> list[str]:
    return sorted((await session.scalars(select(Item.name))).all())


async def test_select_sees_only_own_rows(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        assert await names(session) == ["a1", "a2"]
        assert [n.body for n in (await session.scalars(select(Note))).all()] == [
            "a1-note",
            "a2-note",
        ]
    async with isolation.session(B) as session:
        assert await names(session) == ["b1"]


async def test_filter_holds_after_commit(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        session.add(Item(name="a3"))
        await session.commit()
        assert await names(session) == ["a1", "a2", "a3"]
        session.add(Item(name="a4"))
        await session.commit()
        assert await names(session) == ["a1", "a2", "a3", "a4"]
    async with isolation.session(B) as session:
        assert await names(session) == ["b1"]


async def test_insert_is_stamped_with_session_tenant(isolation: RowIsolation) -> None:
    async with isolation.session(B) as session:
        item = Item(name="b2")
        session.add(item)
        await session.flush()
        assert item.tenant_id == B.id


async def test_adding_another_tenants_row_raises(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        session.add(Item(name="forged", tenant_id=B.id))
        with pytest.raises(CrossTenantAccess):
            await session.flush()


async def test_moving_a_row_to_another_tenant_raises(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        item = (await session.scalars(select(Item).where(Item.name == "a1"))).one()
        item.tenant_id = B.id
        with pytest.raises(CrossTenantAccess):
            await session.commit()


async def test_get_by_primary_key_of_foreign_row_returns_none(isolation: RowIsolation) -> None:
    async with isolation.session(B) as session:
        b1_id = (await session.scalars(select(Item.id))).one()
    async with isolation.session(A) as session:
        assert await session.get(Item, b1_id) is None


async def test_orm_update_and_delete_touch_only_own_rows(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        await session.execute(update(Item).values(name="renamed"))
        await session.execute(delete(Note))
        await session.commit()
    async with isolation.session(B) as session:
        assert await names(session) == ["b1"]
        assert len((await session.scalars(select(Note))).all()) == 1


async def test_update_setting_foreign_tenant_id_raises(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        with pytest.raises(CrossTenantAccess):
            await session.execute(update(Item).values(tenant_id=B.id))


async def test_bulk_update_by_primary_key_skips_foreign_rows(isolation: RowIsolation) -> None:
    async with isolation.session(B) as session:
        b1_id = (await session.scalars(select(Item.id))).one()
    async with isolation.session(A) as session:
        await session.execute(update(Item), [{"id": b1_id, "name": "hijacked"}])
        await session.commit()
    async with isolation.session(B) as session:
        assert await names(session) == ["b1"]


async def test_bulk_insert_is_stamped_and_refuses_foreign_tenant(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        await session.execute(insert(Item), [{"name": "bulk1"}, {"name": "bulk2"}])
        await session.execute(insert(Item).values(name="single"))
        await session.commit()
        assert await names(session) == ["a1", "a2", "bulk1", "bulk2", "single"]
        with pytest.raises(CrossTenantAccess):
            await session.execute(insert(Item), [{"name": "x", "tenant_id": B.id}])
        with pytest.raises(CrossTenantAccess):
            await session.execute(insert(Item).values(name="x", tenant_id=B.id))
    async with isolation.session(B) as session:
        assert await names(session) == ["b1"]


async def test_aggregates_aliases_and_eager_loads_are_filtered(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        assert await session.scalar(select(func.count()).select_from(Item)) == 2
        other = aliased(Item)
        assert len((await session.scalars(select(other))).all()) == 2
        items = (await session.scalars(select(Item).options(selectinload(Item.notes)))).all()
        assert sorted(note.body for item in items for note in item.notes) == [
            "a1-note",
            "a2-note",
        ]


async def test_unscoped_models_are_shared(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        session.add(Plan(name="pro"))
        await session.commit()
    async with isolation.session(B) as session:
        assert (await session.scalars(select(Plan.name))).all() == ["pro"]


async def test_purge_deletes_only_that_tenants_rows(isolation: RowIsolation) -> None:
    await isolation.purge(A)
    async with isolation.session(A) as session:
        assert await names(session) == []
    async with isolation.session(B) as session:
        assert await names(session) == ["b1"]
        assert len((await session.scalars(select(Note))).all()) == 1


@all_databases
@own_loop
async def test_session_without_tenant_refuses_scoped_statements(engine: AsyncEngine) -> None:
    async with AsyncSession(engine, sync_session_class=TenantSession) as session:
        with pytest.raises(TenantContextMissing):
            await session.execute(select(Item))


@all_databases
@own_loop
async def test_concurrent_first_tenants_create_the_shared_tables_once(engine: AsyncEngine) -> None:
    isolation = RowIsolation(engine, TenantTables(Base.metadata))
    await asyncio.gather(*(isolation.provision(tenant) for tenant in (A, B) * 4))
    async with isolation.session(A) as session:
        assert (await session.scalars(select(Item))).all() == []


@all_databases
@own_loop
async def test_processes_creating_the_shared_tables_at_once_all_succeed(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("an embedded SQLite database serves one process")
    # Each RowIsolation stands for a process of its own: only the server can order them.
    isolations = [RowIsolation(engine, TenantTables(Base.metadata)) for _ in range(4)]
    await asyncio.gather(*(isolation.provision(A) for isolation in isolations))
    async with isolations[0].session(A) as session:
        assert (await session.scalars(select(Item))).all() == []

"""Foreign keys between tenant tables never reach another tenant's rows.

Two patterns, on every backend: `TenantScoped.tenant_foreign_key` (a composite key the database
enforces) and the tenant session's check of plain foreign keys. Either way, a reference to
another tenant's row gets exactly the answer a reference to a row that exists nowhere gets.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import ForeignKey, String, UniqueConstraint, event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from fastapi_tenancy import CrossTenantAccess, Tenant, TenantScoped
from fastapi_tenancy.isolation import RowIsolation, references
from tests.support.backends import DATABASES
from tests.support.module_database import emptied_row_isolation, module_engine

A = Tenant(identifier="tenant-a")
B = Tenant(identifier="tenant-b")
NOWHERE = 10_000_000


class Base(DeclarativeBase):
    pass


class Doc(TenantScoped, Base):
    """References its folder through the composite (tenant_id, folder_id) key."""

    __tablename__ = "fk_docs"
    __table_args__ = (TenantScoped.tenant_foreign_key("folder_id", "fk_folders.id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int]
    folder: Mapped[Folder] = relationship()


class Folder(TenantScoped, Base):
    # Defined after Doc on purpose: the key Doc needs is added when this table appears.
    __tablename__ = "fk_folders"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Link(TenantScoped, Base):
    """References its folder through a plain foreign key: the session checks it."""

    __tablename__ = "fk_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("fk_folders.id"))
    folder: Mapped[Folder | None] = relationship()


# The tests of a backend share one database (`engine`, one per backend), its tables created once;
# `isolation` empties them before every test. The tests using it run in the module's event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DATABASES)
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    """The module's database of one backend."""
    async with module_engine(request.param, tmp_path_factory, "row-fk") as engine:
        yield engine


@pytest_asyncio.fixture(loop_scope="module")
async def isolation(engine: AsyncEngine) -> RowIsolation:
    """A new `RowIsolation` over the module's tables, emptied of what an earlier test wrote."""
    isolation = await emptied_row_isolation(engine, Base.metadata, A)
    return isolation


async def folder_of(isolation: RowIsolation, tenant: Tenant, name: str) -> int:
    async with isolation.session(tenant) as session:
        folder = Folder(name=name)
        session.add(folder)
        await session.commit()
        return folder.id


@contextmanager
def statements_on(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def without_numbers(message: str) -> str:
    return re.sub(r"\d+", "N", message)


async def database_refusal(session: AsyncSession, row: Any) -> str:
    session.add(row)
    with pytest.raises(IntegrityError) as refused:
        await session.flush()
    await session.rollback()
    return without_numbers(str(refused.value.orig))


def test_tenant_foreign_key_gives_the_referenced_table_its_tenant_key() -> None:
    folders = Base.metadata.tables["fk_folders"]
    keys = [set(c.columns.keys()) for c in folders.constraints if isinstance(c, UniqueConstraint)]
    assert {"tenant_id", "id"} in keys
    (fk,) = Base.metadata.tables["fk_docs"].foreign_key_constraints
    assert fk.column_keys == ["tenant_id", "folder_id"]
    assert [element.target_fullname for element in fk.elements] == [
        "fk_folders.tenant_id",
        "fk_folders.id",
    ]


@module_loop
async def test_tenant_foreign_key_refuses_another_tenants_row_like_a_missing_one(
    isolation: RowIsolation,
) -> None:
    theirs = await folder_of(isolation, A, "a's folder")
    async with isolation.session(B) as session:
        elsewhere = await database_refusal(session, Doc(folder_id=theirs))
        nowhere = await database_refusal(session, Doc(folder_id=NOWHERE))
    assert elsewhere == nowhere


@module_loop
async def test_tenant_foreign_key_accepts_the_tenants_own_rows(isolation: RowIsolation) -> None:
    mine = await folder_of(isolation, B, "b's folder")
    async with isolation.session(B) as session:
        session.add_all([Doc(folder_id=mine), Doc(folder=Folder(name="new"))])
        await session.commit()
        docs = (await session.scalars(select(Doc).order_by(Doc.id))).all()
        assert [doc.tenant_id for doc in docs] == [B.id, B.id]


@module_loop
async def test_a_refused_reference_never_blocks_the_owner_from_deleting_its_row(
    isolation: RowIsolation,
) -> None:
    theirs = await folder_of(isolation, A, "a's folder")
    async with isolation.session(B) as session:
        await database_refusal(session, Doc(folder_id=theirs))
        session.add(Link(folder_id=theirs))
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    async with isolation.session(A) as session:
        folder = await session.get(Folder, theirs)
        assert folder is not None
        await session.delete(folder)
        await session.commit()


@module_loop
async def test_plain_foreign_key_to_another_tenants_row_is_refused_like_a_missing_one(
    isolation: RowIsolation,
) -> None:
    theirs = await folder_of(isolation, A, "a's folder")
    refusals = []
    async with isolation.session(B) as session:
        for folder_id in (theirs, NOWHERE):
            session.add(Link(folder_id=folder_id))
            with pytest.raises(CrossTenantAccess) as refused:
                await session.flush()
            refusals.append(str(refused.value))
            await session.rollback()
    assert refusals[0] == refusals[1]
    assert "fk_folders" in refusals[0]
    async with isolation.session(A) as session:
        assert (await session.scalars(select(Link))).all() == []


@module_loop
async def test_plain_foreign_keys_are_checked_with_one_query_per_flush(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    mine = [await folder_of(isolation, B, f"b{n}") for n in range(3)]
    async with isolation.session(B) as session:
        session.add_all(Link(folder_id=folder_id) for folder_id in mine + mine)
        with statements_on(engine) as statements:
            await session.flush()
        await session.commit()
    lookups = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    assert len(lookups) == 1, statements


@module_loop
async def test_plain_foreign_key_accepts_a_parent_inserted_by_the_same_flush(
    isolation: RowIsolation,
) -> None:
    async with isolation.session(B) as session:
        session.add_all([Folder(id=NOWHERE + 1, name="explicit"), Link(folder_id=NOWHERE + 1)])
        session.add(Link(folder=Folder(name="through the relationship")))
        await session.commit()
        assert len((await session.scalars(select(Link))).all()) == 2


@module_loop
async def test_moving_a_plain_foreign_key_to_another_tenants_row_is_refused(
    isolation: RowIsolation,
) -> None:
    theirs = await folder_of(isolation, A, "a's folder")
    mine = await folder_of(isolation, B, "b's folder")
    async with isolation.session(B) as session:
        link = Link(folder_id=mine)
        session.add(link)
        await session.commit()
        link.folder_id = theirs
        with pytest.raises(CrossTenantAccess):
            await session.flush()


@module_loop
async def test_relating_an_object_of_another_tenant_is_refused(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        theirs = Folder(name="a's folder")
        session.add(theirs)
        await session.commit()
    async with isolation.session(B) as session:
        session.add(Link(folder=theirs))
        with pytest.raises(CrossTenantAccess):
            await session.flush()


@module_loop
async def test_orm_insert_and_update_statements_check_plain_foreign_keys(
    isolation: RowIsolation,
) -> None:
    theirs = await folder_of(isolation, A, "a's folder")
    mine = await folder_of(isolation, B, "b's folder")
    async with isolation.session(B) as session:
        refused = [
            insert(Link).values(folder_id=theirs),
            insert(Link).values([{"folder_id": mine}, {"folder_id": theirs}]),
            update(Link).values(folder_id=NOWHERE),
        ]
        for statement in refused:
            with pytest.raises(CrossTenantAccess):
                await session.execute(statement)
        with pytest.raises(CrossTenantAccess):
            await session.execute(insert(Link), [{"folder_id": mine}, {"folder_id": theirs}])
        with pytest.raises(CrossTenantAccess):
            await session.execute(
                update(Link).values(folder_id=select(Folder.id).scalar_subquery())
            )
        await session.execute(insert(Link), [{"folder_id": mine}, {"folder_id": None}])
        await session.execute(update(Link).values(folder_id=mine))
        await session.commit()
        assert [link.folder_id for link in (await session.scalars(select(Link))).all()] == [
            mine,
            mine,
        ]


@module_loop
async def test_many_referenced_keys_are_checked_in_batches(
    isolation: RowIsolation, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(references, "KEYS_PER_QUERY", 2)
    theirs = await folder_of(isolation, A, "a's folder")
    mine = [await folder_of(isolation, B, f"b{n}") for n in range(3)]
    async with isolation.session(B) as session:
        session.add_all(Link(folder_id=folder_id) for folder_id in mine)
        with statements_on(engine) as statements:
            await session.flush()
        assert len([sql for sql in statements if "fk_folders" in sql]) == 2
        session.add_all(Link(folder_id=folder_id) for folder_id in [*mine, theirs])
        with pytest.raises(CrossTenantAccess):
            await session.flush()

"""Row isolation against ORM constructs that used to cross tenants (issue #11, items 1-5).

Each statement here either touches only the caller's rows or raises `CrossTenantAccess`: upserts,
joined and single-table inheritance, SELECTs inside INSERTs, tenant_id arriving through
parameters, and objects forged in memory with another tenant's primary key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import (
    ForeignKey,
    String,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    make_transient_to_detached,
    mapped_column,
    selectin_polymorphic,
    with_polymorphic,
)
from sqlalchemy.orm.attributes import set_committed_value

from fastapi_tenancy import CrossTenantAccess, Tenant, TenantScoped
from fastapi_tenancy.isolation import RowIsolation
from tests.support.backends import DATABASES
from tests.support.module_database import emptied_row_isolation, module_engine

A = Tenant(identifier="attack-a")
B = Tenant(identifier="attack-b")

# The tests of a backend share one database, its tables created once (a fresh database per test
# was nine tenths of the module's time); `isolation` puts the rows back before every test.
pytestmark = pytest.mark.asyncio(loop_scope="module")


class AttackBase(DeclarativeBase):
    pass


class Gadget(TenantScoped, AttackBase):
    __tablename__ = "attack_gadgets"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(50))


class Ledger(AttackBase):
    """Shared by every tenant."""

    __tablename__ = "attack_ledger"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(50))


class Staff(TenantScoped, AttackBase):
    """Joined-table inheritance with the mixin on the base: tenant_id lives in attack_staff."""

    __tablename__ = "attack_staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))
    __mapper_args__ = MappingProxyType(
        {
            "polymorphic_on": "kind",
            "polymorphic_identity": "staff",
        }
    )


class Manager(Staff):
    __tablename__ = "attack_managers"

    id: Mapped[int] = mapped_column(ForeignKey("attack_staff.id"), primary_key=True)
    level: Mapped[int] = mapped_column(default=1)
    __mapper_args__ = MappingProxyType({"polymorphic_identity": "manager"})


class Vehicle(TenantScoped, AttackBase):
    """Single-table inheritance with the mixin on the base."""

    __tablename__ = "attack_vehicles"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50))
    __mapper_args__ = MappingProxyType(
        {
            "polymorphic_on": "kind",
            "polymorphic_identity": "vehicle",
        }
    )


class Car(Vehicle):
    __mapper_args__ = MappingProxyType({"polymorphic_identity": "car"})


class Document(AttackBase):
    """Unscoped base of a TenantScoped subclass: a statement on it would see every tenant."""

    __tablename__ = "attack_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(50))
    __mapper_args__ = MappingProxyType(
        {
            "polymorphic_on": "kind",
            "polymorphic_identity": "document",
        }
    )


class SecretDocument(TenantScoped, Document):
    __tablename__ = "attack_secret_documents"

    id: Mapped[int] = mapped_column(ForeignKey("attack_documents.id"), primary_key=True)
    __mapper_args__ = MappingProxyType({"polymorphic_identity": "secret"})


A_GADGET, B_GADGET = 1, 2


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DATABASES)
async def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    """The module's database of one backend, with the attack tables."""
    async with module_engine(request.param, tmp_path_factory, "row-attacks") as engine:
        yield engine


@pytest_asyncio.fixture(loop_scope="module")
async def isolation(engine: AsyncEngine) -> RowIsolation:
    """A new `RowIsolation` over the seeded rows only: what an earlier test wrote is deleted."""
    isolation = await emptied_row_isolation(engine, AttackBase.metadata, A)
    for tenant, gadget in ((A, A_GADGET), (B, B_GADGET)):
        prefix = tenant.identifier[-1]
        async with isolation.session(tenant) as session:
            session.add_all(
                [
                    Gadget(id=gadget, name=f"{prefix}-gadget"),
                    Manager(name=f"{prefix}-manager", level=1),
                    Staff(name=f"{prefix}-staff"),
                    Car(name=f"{prefix}-car"),
                    SecretDocument(title=f"{prefix}-secret"),
                ]
            )
            await session.commit()
    return isolation


async def raw(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    """Every tenant's rows, read past the ORM."""
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


def dialect(session: AsyncSession) -> str:
    assert session.bind is not None
    return session.bind.dialect.name


def upsert_insert(session: AsyncSession) -> Any:
    inserts = {"postgresql": postgresql.insert, "sqlite": sqlite.insert, "mysql": mysql.insert}
    return inserts[dialect(session)]


def upsert(session: AsyncSession, values: dict[str, Any], set_: Any) -> Any:
    """INSERT ... ON CONFLICT (id) DO UPDATE / ON DUPLICATE KEY UPDATE, for the session's server."""
    statement = upsert_insert(session)(Gadget).values(**values)
    if dialect(session) == "mysql":
        return statement.on_duplicate_key_update(set_(statement.inserted))
    return statement.on_conflict_do_update(index_elements=["id"], set_=set_(statement.excluded))


# 1. Upserts


async def test_upsert_on_a_foreign_key_leaves_the_foreign_row_alone(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        statement = upsert(
            session, {"id": B_GADGET, "name": "hijacked"}, lambda new: {"name": new.name}
        )
        if dialect(session) != "mysql":
            statement = statement.returning(Gadget.id, Gadget.name, Gadget.tenant_id)
            assert (await session.execute(statement)).all() == []
        else:
            with pytest.raises(CrossTenantAccess, match="RETURNING"):
                await session.execute(statement.returning(Gadget.name))
            await session.execute(statement)
        await session.commit()
    assert await raw(engine, "SELECT id, name, tenant_id FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, "a-gadget", A.id),
        (B_GADGET, "b-gadget", B.id),
    ]


async def test_upsert_copying_every_column_from_excluded_stays_in_the_tenant(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    def every_column(new: Any) -> dict[str, Any]:
        return {c.name: new[c.name] for c in Gadget.__table__.c if not c.primary_key}

    async with isolation.session(A) as session:
        for gadget in (A_GADGET, B_GADGET, 3):
            await session.execute(upsert(session, {"id": gadget, "name": "copied"}, every_column))
        await session.commit()
    assert await raw(engine, "SELECT id, name, tenant_id FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, "copied", A.id),
        (B_GADGET, "b-gadget", B.id),
        (3, "copied", A.id),
    ]


async def test_upsert_setting_tenant_id_to_another_tenant_raises(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        for set_ in (
            lambda new: {"name": new.name, "tenant_id": B.id},
            lambda new: {"name": new.name, "tenant_id": func.lower(B.id)},
            lambda new: {"tenant_id": select(Gadget.tenant_id).limit(1).scalar_subquery()},
        ):
            with pytest.raises(CrossTenantAccess, match="upsert"):
                await session.execute(upsert(session, {"id": A_GADGET, "name": "x"}, set_))


async def test_insert_or_replace_raises(isolation: RowIsolation, engine: AsyncEngine) -> None:
    async with isolation.session(A) as session:
        replace = insert(Gadget).values(id=B_GADGET, name="replaced").prefix_with("OR REPLACE")
        with pytest.raises(CrossTenantAccess, match="OR REPLACE"):
            await session.execute(replace)
    assert await b_gadget_name(engine) == "b-gadget"


async def test_upsert_subqueries_see_only_own_rows(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        highest = select(func.max(Gadget.name)).where(Gadget.id != A_GADGET).scalar_subquery()
        await session.execute(
            upsert(
                session,
                {"id": A_GADGET, "name": "x"},
                lambda new: {"name": func.coalesce(highest, "none")},
            )
        )
        await session.commit()
    rows = await raw(engine, f"SELECT name FROM attack_gadgets WHERE id = {A_GADGET}")
    assert rows == [("none",)]


# 2. Inheritance


async def test_update_and_delete_of_a_joined_subclass_touch_only_own_rows(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        await session.execute(update(Manager).values(level=9))
        await session.execute(update(Manager).where(Manager.level > 0).values(level=8))
        await session.execute(update(Manager).where(Manager.name != "").values(level=7))
        if dialect(session) == "sqlite":
            with pytest.raises(CrossTenantAccess, match="SQLite"):
                await session.execute(delete(Manager))
        else:
            await session.execute(delete(Manager).where(Manager.level == 8))
        await session.commit()
    managers = await raw(
        engine,
        "SELECT s.name, s.tenant_id, m.level FROM attack_managers m"
        " JOIN attack_staff s ON s.id = m.id ORDER BY s.name",
    )
    assert ("b-manager", B.id, 1) in managers
    assert all(tenant == A.id for name, tenant, _ in managers if name != "b-manager")


async def test_bulk_update_by_primary_key_of_a_joined_subclass_skips_foreign_rows(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(B) as session:
        b_manager = (await session.scalars(select(Manager.id))).one()
    async with isolation.session(A) as session:
        await session.execute(update(Manager), [{"id": b_manager, "level": 7, "name": "x"}])
        await session.commit()
    assert await raw(engine, f"SELECT level FROM attack_managers WHERE id = {b_manager}") == [(1,)]


async def test_single_table_subclass_update_and_delete_touch_only_own_rows(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        await session.execute(update(Car).values(name="renamed"))
        await session.execute(delete(Car).where(Car.name == "renamed"))
        await session.commit()
    assert await raw(engine, "SELECT name, tenant_id FROM attack_vehicles") == [("b-car", B.id)]


async def test_polymorphic_selects_of_a_scoped_base_see_only_own_rows(
    isolation: RowIsolation,
) -> None:
    async with isolation.session(A) as session:
        staff = (await session.scalars(select(Staff).order_by(Staff.name))).all()
        assert [s.name for s in staff] == ["a-manager", "a-staff"]
        every = with_polymorphic(Staff, [Manager])
        assert len((await session.scalars(select(every))).all()) == 2
        assert [v.name for v in (await session.scalars(select(Vehicle))).all()] == ["a-car"]
        session.expunge_all()
        by_in = select(Staff).options(selectin_polymorphic(Staff, [Manager]))
        loaded = (await session.scalars(by_in)).all()
        assert sorted((s.name, getattr(s, "level", None)) for s in loaded) == [
            ("a-manager", 1),
            ("a-staff", None),
        ]


async def test_a_parameter_named_like_the_tenant_parameter_cannot_widen_a_select(
    isolation: RowIsolation,
) -> None:
    # SELECTs name the tenant through the execution parameter fastapi_tenancy_tenant_id: one
    # supplied by the caller, or bound in the statement, is overridden by the session's tenant.
    name = "fastapi_tenancy_tenant_id"
    async with isolation.session(A) as session:
        names = select(Gadget.name).order_by(Gadget.name)
        assert (await session.scalars(names, {name: B.id})).all() == ["a-gadget"]
        assert (await session.scalars(names, [{name: B.id}])).all() == ["a-gadget"]
        own = select(Gadget.name).where(Gadget.tenant_id == bindparam(name, value=B.id))
        assert (await session.scalars(own)).all() == ["a-gadget"]
        assert await session.get(Gadget, B_GADGET) is None


async def test_statements_on_an_unscoped_base_of_a_scoped_subclass_raise(
    isolation: RowIsolation,
) -> None:
    async with isolation.session(A) as session:
        for statement in (
            select(Document),
            select(with_polymorphic(Document, [SecretDocument])),
            select(Document.title),
            select(Ledger).where(Ledger.name.in_(select(Document.title))),
            update(Document).values(title="x"),
            delete(Document),
        ):
            with pytest.raises(CrossTenantAccess, match="TenantScoped on the base class"):
                await session.execute(statement)
        secrets = (await session.scalars(select(SecretDocument))).all()
        assert [s.title for s in secrets] == ["a-secret"]


async def test_other_entities_in_update_and_delete_are_filtered(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        # UPDATE ... FROM attack_vehicles: only A's car may supply the name.
        await session.execute(update(Gadget).where(Gadget.name != Car.name).values(name=Car.name))
        if dialect(session) != "sqlite":  # SQLite has no DELETE with another table
            chosen_by_b = delete(Gadget).where(Gadget.name != Car.name, Car.name == "b-car")
            await session.execute(chosen_by_b.execution_options(is_delete_using=True))
        await session.commit()
    assert await raw(engine, "SELECT id, name FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, "a-car"),
        (B_GADGET, "b-gadget"),
    ]


# 3. SELECTs inside INSERTs


async def test_insert_from_select_copies_only_own_rows(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        await session.execute(insert(Ledger).from_select(["name"], select(Gadget.name)))
        await session.execute(
            insert(Ledger).from_select(
                ["name"], select(Staff.name).where(Staff.id.in_(select(Manager.id)))
            )
        )
        await session.commit()
    assert sorted(await raw(engine, "SELECT name FROM attack_ledger")) == [
        ("a-gadget",),
        ("a-manager",),
    ]


async def test_insert_from_select_into_a_scoped_table_is_stamped(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        names = select(Gadget.id + 10, Gadget.name)
        await session.execute(insert(Gadget).from_select(["id", "name"], names))
        with_tenant = select(Gadget.id + 20, Gadget.name, Gadget.tenant_id).where(Gadget.id < 10)
        await session.execute(insert(Gadget).from_select(["id", "name", "tenant_id"], with_tenant))
        await session.commit()
        for forged in (literal(B.id), bindparam("t", B.id), func.lower(B.id)):
            source = select(Gadget.id + 30, Gadget.name, forged).where(Gadget.id < 10)
            with pytest.raises(CrossTenantAccess, match="from_select"):
                await session.execute(
                    insert(Gadget).from_select(["id", "name", "tenant_id"], source)
                )
    assert await raw(engine, "SELECT id, tenant_id FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, A.id),
        (B_GADGET, B.id),
        (11, A.id),
        (21, A.id),
    ]


async def test_insert_from_a_union_is_filtered_and_stamped(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        names = union(select(Gadget.id + 40, Gadget.name), select(Staff.id + 50, Staff.name))
        await session.execute(insert(Gadget).from_select(["id", "name"], names))
        await session.execute(
            insert(Ledger).from_select(["name"], union(select(Gadget.name), select(Car.name)))
        )
        await session.commit()
        forged = union(
            select(Gadget.id + 60, Gadget.name, Gadget.tenant_id),
            select(Staff.id + 70, Staff.name, literal(B.id)),
        )
        with pytest.raises(CrossTenantAccess, match="from_select"):
            await session.execute(insert(Gadget).from_select(["id", "name", "tenant_id"], forged))
    gadgets = await raw(engine, "SELECT name, tenant_id FROM attack_gadgets WHERE id > 40")
    assert sorted(gadgets) == [("a-gadget", A.id), ("a-manager", A.id), ("a-staff", A.id)]
    # The gadgets just copied from the staff names are A's too.
    assert sorted(await raw(engine, "SELECT name FROM attack_ledger")) == [
        ("a-car",),
        ("a-gadget",),
        ("a-manager",),
        ("a-staff",),
    ]


async def test_subqueries_in_insert_values_see_only_own_rows(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        foreign = select(Gadget.name).where(Gadget.id == B_GADGET).scalar_subquery()
        await session.execute(insert(Ledger).values(name=foreign))
        highest = select(func.max(Gadget.name)).scalar_subquery()
        await session.execute(insert(Ledger), [{"name": "x"}])
        await session.execute(insert(Gadget).values(id=5, name=highest))
        await session.commit()
    assert set(await raw(engine, "SELECT name FROM attack_ledger")) == {(None,), ("x",)}
    assert await raw(engine, "SELECT name, tenant_id FROM attack_gadgets WHERE id = 5") == [
        ("a-gadget", A.id)
    ]


async def test_tenant_id_from_a_subquery_raises(isolation: RowIsolation) -> None:
    foreign = select(Gadget.tenant_id).where(Gadget.id == B_GADGET).scalar_subquery()
    async with isolation.session(A) as session:
        with pytest.raises(CrossTenantAccess, match="SQL expression"):
            await session.execute(insert(Gadget).values(id=6, name="x", tenant_id=foreign))
        with pytest.raises(CrossTenantAccess, match="SQL expression"):
            await session.execute(update(Gadget).values(tenant_id=foreign))
        with pytest.raises(CrossTenantAccess, match="SQL expression"):
            await session.execute(update(Gadget).values(tenant_id=Gadget.tenant_id + ""))


# 4. tenant_id through parameters


@pytest.mark.parametrize("strategy", ["auto", "bulk", "raw", "orm"])
async def test_inserts_naming_another_tenant_through_parameters_raise(
    isolation: RowIsolation, strategy: str
) -> None:
    options = {"dml_strategy": strategy}
    async with isolation.session(A) as session:
        attempts: list[tuple[Any, Any]] = [
            (insert(Gadget), [{"id": 7, "name": "x", "tenant_id": B.id}]),
            (insert(Gadget), [{"id": 7, "name": "x"}, {"id": 8, "name": "y", "tenant_id": B.id}]),
            (insert(Gadget).values(tenant_id=bindparam("t")), [{"id": 7, "name": "x", "t": B.id}]),
            (insert(Gadget).values(id=7, name="x", tenant_id=bindparam("t")), {"t": B.id}),
            (insert(Gadget).values(id=7, name="x"), {"tenant_id": B.id}),
            (insert(Gadget).values(id=7, name="x", tenant_id=func.lower(B.id)), None),
            (insert(Gadget).values([{"id": 7, "name": "x", "tenant_id": literal(B.id)}]), None),
        ]
        for statement, parameters in attempts:
            if strategy == "bulk" and not isinstance(parameters, list):
                continue  # the bulk strategy takes parameter lists only
            with pytest.raises(CrossTenantAccess):
                await session.execute(statement, parameters, execution_options=options)


@pytest.mark.parametrize("strategy", ["auto", "bulk", "core_only", "orm"])
async def test_updates_naming_another_tenant_through_parameters_raise(
    isolation: RowIsolation, engine: AsyncEngine, strategy: str
) -> None:
    options = {"dml_strategy": strategy}
    async with isolation.session(A) as session:
        attempts: list[tuple[Any, Any]] = [
            (update(Gadget), [{"id": A_GADGET, "tenant_id": B.id}]),
            (update(Gadget).values(tenant_id=bindparam("t")), [{"id": A_GADGET, "t": B.id}]),
        ]
        if strategy == "auto":
            attempts += [
                (update(Gadget), {"tenant_id": B.id}),
                (update(Gadget).values(name="x"), {"tenant_id": B.id}),
                (update(Gadget).values(tenant_id=bindparam("t")), {"t": B.id}),
                (update(Gadget).values(tenant_id=func.lower(B.id)), None),
                (update(Gadget).ordered_values(("name", "x"), ("tenant_id", B.id)), None),
            ]
        for statement, parameters in attempts:
            with pytest.raises(CrossTenantAccess):
                await session.execute(statement, parameters, execution_options=options)
    assert await raw(engine, "SELECT id, tenant_id FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, A.id),
        (B_GADGET, B.id),
    ]


async def test_multi_row_values_are_stamped(isolation: RowIsolation, engine: AsyncEngine) -> None:
    async with isolation.session(A) as session:
        rows = [{"id": 7, "name": "x"}, {"id": 8, "name": "y", "tenant_id": A.id}]
        await session.execute(insert(Gadget).values(rows))
        await session.commit()
    assert await raw(
        engine, "SELECT id, tenant_id FROM attack_gadgets WHERE id > 5 ORDER BY id"
    ) == [
        (7, A.id),
        (8, A.id),
    ]


async def test_parameters_naming_the_own_tenant_are_accepted(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        await session.execute(
            insert(Gadget).values(tenant_id=bindparam("t")), [{"id": 7, "name": "x", "t": A.id}]
        )
        await session.execute(insert(Gadget), {"id": 8, "name": "y", "tenant_id": A.id})
        await session.execute(update(Gadget).values(tenant_id=bindparam("t")), {"t": A.id})
        await session.commit()
    assert await raw(engine, "SELECT id, tenant_id FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, A.id),
        (B_GADGET, B.id),
        (7, A.id),
        (8, A.id),
    ]


# 5. Forged in-memory state


async def b_gadget_name(engine: AsyncEngine) -> str:
    return str((await raw(engine, f"SELECT name FROM attack_gadgets WHERE id = {B_GADGET}"))[0][0])


async def test_flushing_an_object_forged_with_a_foreign_primary_key_raises(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        forged = Gadget(id=B_GADGET, name="hijacked", tenant_id=A.id)
        make_transient_to_detached(forged)
        session.add(forged)
        forged.name = "hijacked again"
        with pytest.raises(CrossTenantAccess, match="make_transient_to_detached"):
            await session.flush()
    async with isolation.session(A) as session:
        forged = Gadget(id=B_GADGET, name="x", tenant_id=A.id)
        make_transient_to_detached(forged)
        session.add(forged)
        await session.delete(forged)
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    async with isolation.session(A) as session:
        forged = Gadget(id=B_GADGET, name="x", tenant_id=A.id)
        make_transient_to_detached(forged)
        merged = await session.merge(forged, load=False)
        merged.name = "merged"
        with pytest.raises(CrossTenantAccess):
            await session.commit()
    assert await b_gadget_name(engine) == "b-gadget"


async def test_changing_the_committed_primary_key_of_an_own_object_raises(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        own = await session.get(Gadget, A_GADGET)
        assert own is not None
        set_committed_value(own, "id", B_GADGET)
        own.name = "hijacked"
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    assert await b_gadget_name(engine) == "b-gadget"


async def test_an_object_of_another_tenant_claimed_by_this_one_raises(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(B) as session:
        theirs = await session.get(Gadget, B_GADGET)
    assert theirs is not None
    async with isolation.session(A) as session:
        session.add(theirs)
        theirs.tenant_id = A.id
        theirs.name = "stolen"
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    assert await raw(engine, f"SELECT tenant_id FROM attack_gadgets WHERE id = {B_GADGET}") == [
        (B.id,)
    ]


async def test_writes_by_key_to_a_scoped_subclass_of_an_unscoped_base_stay_in_the_tenant(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    # The key lives in the unscoped base's table, tenant_id in the subclass's: the read-back
    # that proves a key is the tenant's must join the two, not multiply them.
    ids = dict(
        await raw(
            engine,
            "SELECT s.tenant_id, d.id FROM attack_documents d "
            "JOIN attack_secret_documents s ON s.id = d.id",
        )
    )
    theirs = ids[B.id]

    def forged(**values: Any) -> SecretDocument:
        document = SecretDocument(id=theirs, tenant_id=A.id, **values)
        make_transient_to_detached(document)
        return document

    async with isolation.session(A) as session:
        document = forged(title="x")
        session.add(document)
        document.title = "hijacked"
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    async with isolation.session(A) as session:
        document = forged(title="x")
        session.add(document)
        await session.delete(document)
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    async with isolation.session(A) as session:
        document = forged()  # tenant_id and title unloaded: loading them finds nothing
        session.add(document)
        document.title = "hijacked"
        with pytest.raises(CrossTenantAccess):
            await session.flush()
    async with isolation.session(A) as session:
        with pytest.raises(CrossTenantAccess):
            await session.run_sync(
                lambda s: s.bulk_update_mappings(
                    SecretDocument, [{"id": theirs, "title": "hijacked", "tenant_id": A.id}]
                )
            )
    async with isolation.session(A) as session:
        with pytest.raises(CrossTenantAccess):
            await session.execute(update(SecretDocument), [{"id": theirs, "title": "hijacked"}])
    async with isolation.session(A) as session:  # the own row, by key: no cartesian warning
        own = await session.get(SecretDocument, ids[A.id])
        assert own is not None
        own.title = "renamed"
        await session.commit()
    assert sorted(await raw(engine, "SELECT title FROM attack_documents")) == [
        ("b-secret",),
        ("renamed",),
    ]


async def test_refreshing_a_forged_object_loads_no_foreign_data(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        forged = Gadget(id=B_GADGET, tenant_id=A.id)
        make_transient_to_detached(forged)
        session.add(forged)
        with pytest.raises(InvalidRequestError):
            await session.refresh(forged)
    async with isolation.session(A) as session:
        forged_manager = Manager(tenant_id=A.id)
        async with isolation.session(B) as other:
            forged_manager.id = (await other.scalars(select(Manager.id))).one()
        make_transient_to_detached(forged_manager)
        session.add(forged_manager)
        with pytest.raises(InvalidRequestError):
            await session.refresh(forged_manager)


async def test_loading_an_unloaded_attribute_of_a_forged_object_loads_no_foreign_data(
    isolation: RowIsolation,
) -> None:
    async with isolation.session(B) as other:
        b_manager = (await other.scalars(select(Manager.id))).one()
    async with isolation.session(A) as session:
        # Only the subclass table's column is missing: the ORM selects from that table alone.
        forged = Manager(id=b_manager, tenant_id=A.id, kind="manager", name="x")
        make_transient_to_detached(forged)
        session.add(forged)
        # The confined load finds no row; the ORM reports that as a KeyError for this loader.
        with pytest.raises(KeyError, match="level"):
            await session.run_sync(lambda _: forged.level)


async def test_legacy_bulk_methods_stay_in_the_tenant(
    isolation: RowIsolation, engine: AsyncEngine
) -> None:
    async with isolation.session(A) as session:
        attempts = [
            lambda s: s.bulk_update_mappings(Gadget, [{"id": B_GADGET, "name": "hijacked"}]),
            lambda s: s.bulk_insert_mappings(Gadget, [{"id": 9, "name": "x", "tenant_id": B.id}]),
            lambda s: s.bulk_save_objects([Gadget(id=9, name="x", tenant_id=B.id)]),
        ]
        for attempt in attempts:
            with pytest.raises(CrossTenantAccess):
                await session.run_sync(attempt)
        forged = Gadget(id=B_GADGET, name="x", tenant_id=A.id)
        make_transient_to_detached(forged)
        forged.name = "hijacked"
        with pytest.raises(CrossTenantAccess, match="primary key"):
            await session.run_sync(lambda s: s.bulk_save_objects([forged]))
        await session.run_sync(lambda s: s.bulk_insert_mappings(Gadget, [{"id": 9, "name": "x"}]))
        await session.run_sync(lambda s: s.bulk_save_objects([Gadget(id=10, name="y")]))
        await session.run_sync(
            lambda s: s.bulk_update_mappings(Gadget, [{"id": A_GADGET, "name": "renamed"}])
        )
        await session.commit()
    assert await raw(engine, "SELECT id, name, tenant_id FROM attack_gadgets ORDER BY id") == [
        (A_GADGET, "renamed", A.id),
        (B_GADGET, "b-gadget", B.id),
        (9, "x", A.id),
        (10, "y", A.id),
    ]


async def test_ordinary_loads_and_writes_still_work(isolation: RowIsolation) -> None:
    async with isolation.session(A) as session:
        gadget = await session.get(Gadget, A_GADGET)
        assert gadget is not None
        gadget.name = "renamed"
        manager = (await session.scalars(select(Manager))).one()
        manager.level = 5
        await session.commit()
        session.expire_all()
        await session.refresh(gadget)
        assert gadget.name == "renamed"
        await session.delete(manager)
        await session.commit()
        assert (await session.scalars(select(Manager))).all() == []

"""A grammar of ordinary SQLAlchemy ORM programs, for the row-isolation property test.

Every program is a list of `Step`s. A step is the source of a few lines of sync ORM code run with
``session.run_sync`` in one tenant's session (``session`` is the sync `TenantSession`); it leaves
what it read in ``out``. Steps are source text so that a failing example prints as code that can
be pasted into a reproducer.

The models give two tenants OVERLAPPING primary keys: most tables have ``(tenant_id, id)`` as the
key and both tenants hold ids 1, 2, ...; `Ledger` and the unscoped `Entry` base have a global
``id`` instead, which is what forged objects and upserts aim at. Every string tenant B holds
contains ``"b:"`` and no program writes that text, so any ``"b:"`` that reaches tenant A's results
or rows was read from tenant B.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import ForeignKey, ForeignKeyConstraint, PrimaryKeyConstraint, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from fastapi_tenancy import TenantScoped
from fastapi_tenancy.isolation.scoped import TENANT_ID_LENGTH

# Tenant ids as stored in tenant_id; programs name them A and B.
A = "tenant-a"
B = "tenant-b"
FOREIGN_MARK = "b:"


class Base(DeclarativeBase):
    pass


def _polymorphic(identity: str, *, on: str | None = None) -> dict[str, Any]:
    return {"polymorphic_identity": identity} | ({"polymorphic_on": on} if on else {})


class Thing(TenantScoped, Base):
    __tablename__ = "prop_things"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id"),)

    id: Mapped[int] = mapped_column(autoincrement=False)
    name: Mapped[str] = mapped_column(String(40))
    qty: Mapped[int]
    # The way a careful app joins: the foreign key includes tenant_id.
    parts: Mapped[list[Part]] = relationship(
        back_populates="thing", overlaps="loose_thing", cascade="all, delete-orphan"
    )
    # The way a careless app joins: on id alone, which both tenants share.
    loose_parts: Mapped[list[Part]] = relationship(
        primaryjoin="Thing.id == foreign(Part.thing_id)", viewonly=True
    )


class Part(TenantScoped, Base):
    __tablename__ = "prop_parts"
    __table_args__ = (
        PrimaryKeyConstraint("tenant_id", "id"),
        ForeignKeyConstraint(
            ["tenant_id", "thing_id"], ["prop_things.tenant_id", "prop_things.id"]
        ),
    )

    id: Mapped[int] = mapped_column(autoincrement=False)
    thing_id: Mapped[int]
    label: Mapped[str] = mapped_column(String(40))
    thing: Mapped[Thing] = relationship(back_populates="parts", overlaps="loose_parts")
    loose_thing: Mapped[Thing | None] = relationship(
        primaryjoin="foreign(Part.thing_id) == Thing.id", viewonly=True, uselist=False
    )


class Ledger(TenantScoped, Base):
    """A global primary key: tenant A holds ids 1-3, tenant B ids 11-12."""

    __tablename__ = "prop_ledger"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    memo: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int]


class Vehicle(TenantScoped, Base):
    """Joined-table inheritance under a TenantScoped base."""

    __tablename__ = "prop_vehicles"
    __table_args__: tuple[Any, ...] = (PrimaryKeyConstraint("tenant_id", "id"),)

    id: Mapped[int] = mapped_column(autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(40))
    __mapper_args__ = _polymorphic("vehicle", on="kind")


class Car(Vehicle):
    __tablename__ = "prop_cars"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "id"], ["prop_vehicles.tenant_id", "prop_vehicles.id"]),
    )

    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LENGTH), primary_key=True)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    doors: Mapped[int]
    __mapper_args__ = _polymorphic("car")


class Animal(TenantScoped, Base):
    """Single-table inheritance under a TenantScoped base."""

    __tablename__ = "prop_animals"
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "id"),)

    id: Mapped[int] = mapped_column(autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(40))
    __mapper_args__ = _polymorphic("animal", on="kind")


class Dog(Animal):
    bark: Mapped[str | None] = mapped_column(String(40))
    __mapper_args__ = _polymorphic("dog")


class Cat(Animal):
    __mapper_args__ = _polymorphic("cat")


class Entry(Base):
    """An unscoped base (shared by every tenant) with a TenantScoped subclass, joined."""

    __tablename__ = "prop_entries"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(40))
    __mapper_args__ = _polymorphic("entry", on="kind")


class Secret(TenantScoped, Entry):
    __tablename__ = "prop_secrets"

    id: Mapped[int] = mapped_column(ForeignKey("prop_entries.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(40))
    __mapper_args__ = _polymorphic("secret")


class Plan(Base):
    """Unscoped: every tenant reads every row."""

    __tablename__ = "prop_plans"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String(40))


# The rows each tenant starts with, by table; both tenants use ids 1, 2 on every composite key.
def _seed(
    tenant: str, mark: str, qty: int, ids: dict[str, list[int]]
) -> dict[str, list[dict[str, object]]]:
    def rows(table: str, make: Callable[[int], dict[str, object]]) -> list[dict[str, object]]:
        return [{"tenant_id": tenant, "id": i, **make(i)} for i in ids[table]]

    thing_ids = ids["prop_things"]
    return {
        "prop_things": rows("prop_things", lambda i: {"name": f"{mark}t{i}", "qty": qty + 10 * i}),
        "prop_parts": rows(
            "prop_parts",
            lambda i: {"thing_id": thing_ids[i % len(thing_ids)], "label": f"{mark}p{i}"},
        ),
        "prop_ledger": rows("prop_ledger", lambda i: {"memo": f"{mark}l{i}", "amount": i}),
        "prop_vehicles": rows(
            "prop_vehicles",
            lambda i: {"kind": "car" if i % 2 else "vehicle", "name": f"{mark}v{i}"},
        ),
        "prop_cars": rows("prop_cars", lambda i: {"doors": i + 1}),
        "prop_animals": rows(
            "prop_animals",
            lambda i: {
                "kind": "dog" if i % 2 else "cat",
                "name": f"{mark}a{i}",
                "bark": f"{mark}woof" if i % 2 else None,
            },
        ),
        "prop_entries": [
            {"id": i, "kind": "secret", "title": f"{mark}e{i}"} for i in ids["prop_secrets"]
        ],
        "prop_secrets": rows("prop_secrets", lambda i: {"code": f"{mark}s{i}"}),
    }


SEED_A = _seed(
    A,
    "a:",
    0,
    {
        "prop_things": [1, 2, 3],
        "prop_parts": [1, 2, 3],
        "prop_ledger": [1, 2, 3],
        "prop_vehicles": [1, 2, 3],
        "prop_cars": [1, 3],
        "prop_animals": [1, 2],
        "prop_secrets": [1, 2],
    },
)
# Only tenant B's things have qty > 1000.
SEED_B = _seed(
    B,
    FOREIGN_MARK,
    1000,
    {
        "prop_things": [1, 2, 4],
        "prop_parts": [1, 2, 5],
        "prop_ledger": [11, 12],
        "prop_vehicles": [1, 2, 5],
        "prop_cars": [1, 5],
        "prop_animals": [1, 3],
        "prop_secrets": [11, 12],
    },
)
# Shared rows: the same in every world.
SEED_SHARED = {
    "prop_entries": [{"id": 100, "kind": "entry", "title": "shared"}],
    "prop_plans": [{"id": 1, "title": "basic"}, {"id": 2, "title": "pro"}],
}
# prop_entries rows that are the base rows of tenant B's secrets belong to tenant B.
B_ENTRY_IDS = frozenset(row["id"] for row in SEED_B["prop_secrets"])


def seed_rows(*, with_b: bool) -> dict[str, list[dict[str, object]]]:
    """Every table's starting rows: tenant A's and the shared ones, and tenant B's ``with_b``."""
    seeds = [SEED_SHARED, SEED_A, *([SEED_B] if with_b else [])]
    return {
        table.name: [row for seed in seeds for row in seed.get(table.name, [])]
        for table in Base.metadata.sorted_tables
    }


# --- the grammar ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Sync ORM code for one transaction; it leaves what it read in ``out``.

    ``collides``: the step may write a global key that tenant B already holds, so in the world
    with tenant B it may legitimately fail or do less than in the world without.
    """

    code: str
    collides: bool = False

    def __repr__(self) -> str:
        flag = "  # may collide with B's global keys" if self.collides else ""
        return f"Step(\n{self.code}{flag}\n)"


@dataclass(frozen=True)
class Entity:
    """A mapped class as the grammar sees it: columns to filter, read and write."""

    name: str
    ints: tuple[str, ...]
    strs: tuple[str, ...]
    composite: bool  # primary key (tenant_id, id); else a global id
    ids: tuple[int, ...]
    fixed: dict[str, str] = field(default_factory=dict)  # insert-only columns (discriminators)
    scoped: bool = True


THING = Entity("Thing", ("qty",), ("name",), True, (1, 2, 3, 4))
PART = Entity("Part", ("thing_id",), ("label",), True, (1, 2, 3, 5))
LEDGER = Entity("Ledger", ("amount",), ("memo",), False, (1, 2, 4, 11, 12))
VEHICLE = Entity("Vehicle", (), ("name",), True, (1, 2, 5), {"kind": "'vehicle'"})
CAR = Entity("Car", ("doors",), ("name",), True, (1, 3, 5), {"kind": "'car'"})
ANIMAL = Entity("Animal", (), ("name",), True, (1, 2, 3), {"kind": "'animal'"})
DOG = Entity("Dog", (), ("name", "bark"), True, (1, 3), {"kind": "'dog'"})
CAT = Entity("Cat", (), ("name",), True, (2, 3), {"kind": "'cat'"})
SECRET = Entity("Secret", (), ("title", "code"), False, (1, 11, 13), {"kind": "'secret'"})
ENTRY = Entity("Entry", (), ("title",), False, (1, 11, 100, 101), {"kind": "'entry'"}, False)
PLAN = Entity("Plan", (), ("title",), False, (1, 3), scoped=False)

SCOPED = [THING, PART, LEDGER, VEHICLE, CAR, ANIMAL, DOG, CAT, SECRET]
# Constructs that a hole on main still lets cross tenants are listed here by name, each with the
# hole (the ORM code, and what crossed), so the default grammar leaves them out until it is
# closed; `Grammar(all_constructs=True)` puts them back. Constructs: "unscoped-base", "forged",
# "unscoped-base-writes", "upsert", "insert-subquery", "update-from", "legacy-bulk" (and "core",
# for RLS runs only).
EXCLUDED: dict[str, str] = {}

# Holes that row-level security closes underneath: with it on, these stay in the grammar.
RLS_COVERS: frozenset[str] = frozenset()


def _key(entity: Entity, tenant: str, i: int) -> str:
    return f"({tenant}, {i})" if entity.composite else str(i)


def _collides(entity: Entity, i: int) -> bool:
    # A global key tenant B holds: inserting it in the world with B fails or hits B's row.
    return not entity.composite and i >= 11


class Grammar:
    """Strategies for programs on one backend (``dialect``: sqlite, postgresql or mysql)."""

    def __init__(self, dialect: str, *, rls: bool = False, all_constructs: bool = False) -> None:
        self.dialect = dialect
        self.rls = rls

        def enabled(construct: str) -> bool:
            if construct == "core":
                return rls  # only row-level security confines Core statements and raw SQL
            return all_constructs or construct not in EXCLUDED or (rls and construct in RLS_COVERS)

        self.enabled = enabled

    # values

    def text_value(self) -> st.SearchStrategy[str]:
        return st.sampled_from(["'a:new'", "'a:x'", "'zz'"])

    def int_value(self) -> st.SearchStrategy[str]:
        return st.sampled_from(["0", "7", "1001"])

    def tenant_value(self) -> st.SearchStrategy[str]:
        """tenant_id written every way a program can: literal, bind, expression, subquery."""
        forms = [
            "A",
            "B",
            "literal(B)",
            "bindparam('t', B)",
            "func.lower(B)",
            "literal('tenant-') + 'b'",
            "type_coerce(B, String)",
            # tenant B's tenant_id as read back by a subquery (only B's things have qty > 1000)
            "select(Thing.tenant_id).where(Thing.qty > 1000).limit(1).scalar_subquery()",
            "select(Thing.tenant_id).limit(1).scalar_subquery()",
        ]
        return st.sampled_from(forms)

    def column_value(
        self, entity: Entity, column: str, *, inserting: bool = False
    ) -> st.SearchStrategy[str]:
        if column in entity.strs and (self.enabled("insert-subquery") or not inserting):
            other = st.sampled_from([THING, PART, LEDGER, SECRET])
            sub = st.builds(
                lambda e, i: (
                    f"select({e.name}.{e.strs[0]}).where({e.name}.id == {i})"
                    ".limit(1).scalar_subquery()"
                ),
                other,
                st.sampled_from([1, 4, 5, 11]),
            )
            return st.one_of(self.text_value(), sub)
        return self.int_value()

    # predicates

    def predicate(self, entity: Entity, depth: int = 0) -> st.SearchStrategy[str]:
        e = entity.name
        col = entity.strs[0]
        simple = st.one_of(
            st.builds(lambda i: f"{e}.id == {i}", st.sampled_from(entity.ids)),
            st.builds(lambda i: f"{e}.id >= {i}", st.sampled_from(entity.ids)),
            st.just(f"{e}.{col}.like('%1%')"),
            st.just("true()"),
        )
        if entity.scoped:
            simple = st.one_of(
                simple,
                st.just(f"{e}.tenant_id == B"),
                st.just(f"or_({e}.tenant_id == B, {e}.id == 1)"),
                st.just(f"{e}.tenant_id != A"),
            )
        if depth:
            return simple
        other = st.sampled_from(SCOPED)
        sub = st.one_of(
            st.builds(
                lambda o, p: f"{e}.id.in_(select({o.name}.id).where({p}))",
                other,
                other.flatmap(lambda o: self.predicate(o, depth + 1)),
            ),
            st.builds(lambda o: f"exists().where({o.name}.id == {e}.id)", other),
            st.builds(
                lambda o: f"{e}.id == select(func.max({o.name}.id)).scalar_subquery()", other
            ),
            st.builds(lambda o: f"~exists(select({o.name}.id).where({o.name}.id > 3))", other),
        )
        combined = st.builds(lambda p, q: f"and_({p}, {q})", simple, sub)
        return st.one_of(simple, sub, combined)

    # reads

    def reads(self) -> st.SearchStrategy[Step]:
        entities = st.sampled_from([*SCOPED, *([ENTRY] if self.enabled("unscoped-base") else [])])
        return st.one_of(
            entities.flatmap(self.select_entity),
            entities.flatmap(self.select_columns),
            entities.flatmap(self.select_aggregate),
            self.select_join(),
            entities.flatmap(self.select_subquery_from),
            entities.flatmap(self.select_cte),
            self.select_union(),
            self.select_scalar_subquery_column(),
            self.select_polymorphic(),
            self.get(),
            entities.flatmap(self.select_with_parameters),
            self.lazy_loads(),
            self.refresh(),
        )

    def select_entity(self, entity: Entity) -> st.SearchStrategy[Step]:
        options = [""]
        if entity is THING:
            options += [
                ".options(selectinload(Thing.parts))",
                ".options(joinedload(Thing.parts))",
                ".options(selectinload(Thing.loose_parts))",
                ".options(joinedload(Thing.loose_parts))",
                ".options(subqueryload(Thing.loose_parts))",
            ]
        if entity is PART:
            options += [
                ".options(joinedload(Part.loose_thing))",
                ".options(selectinload(Part.loose_thing))",
                ".options(joinedload(Part.thing))",
            ]
        return st.builds(
            lambda p, o: Step(
                f"out = session.scalars(select({entity.name}).where({p}){o}).unique().all()"
            ),
            self.predicate(entity),
            st.sampled_from(options),
        )

    def select_with_parameters(self, entity: Entity) -> st.SearchStrategy[Step]:
        e = entity.name
        tenant = [f"{e}.tenant_id == bindparam('t')"] if entity.scoped else []
        return st.builds(
            lambda where, t, i: Step(
                f"out = session.execute(select({e}.id, {e}.{entity.strs[0]}).where({where}), "
                f"{{'t': {t}, 'k': {i}}}).all()"
            ),
            st.sampled_from([*tenant, f"{e}.id >= bindparam('k')"]),
            st.sampled_from(["A", "B"]),
            st.sampled_from(entity.ids),
        )

    def select_columns(self, entity: Entity) -> st.SearchStrategy[Step]:
        e = entity.name
        columns = ", ".join(f"{e}.{c}" for c in ("id", *entity.strs, *entity.ints))
        return st.builds(
            lambda p, alias: Step(
                f"{e}_ = aliased({e})\n"
                f"out = session.execute(select({columns.replace(e + '.', e + '_.')})"
                f".where({p.replace(e + '.', e + '_.')})).all()"
                if alias
                else f"out = session.execute(select({columns}).where({p})).all()"
            ),
            self.predicate(entity, depth=1),
            st.booleans(),
        )

    def select_aggregate(self, entity: Entity) -> st.SearchStrategy[Step]:
        e = entity.name
        return st.builds(
            lambda p, shape: Step(
                {
                    "count": f"out = session.execute(select(func.count()).select_from({e})"
                    f".where({p})).all()",
                    "max": f"out = session.execute(select(func.max({e}.{entity.strs[0]}), "
                    f"func.sum({e}.id)).where({p})).all()",
                    "group": f"out = session.execute(select({e}.id, func.count())"
                    f".where({p}).group_by({e}.id)).all()",
                }[shape]
            ),
            self.predicate(entity),
            st.sampled_from(["count", "max", "group"]),
        )

    def select_join(self) -> st.SearchStrategy[Step]:
        joins = [
            "select(Thing.name, Part.label).join(Part, Part.thing_id == Thing.id)",
            "select(Thing.name, Part.label).join(Thing.parts)",
            "select(Thing.name, Part.label).join(Thing.loose_parts)",
            "select(Part.label, Thing.name).outerjoin(Thing, Part.loose_thing)",
            "select(Thing.name, Plan.title).join(Plan, Plan.id == Thing.id)",
            "select(Plan.title, Thing.name).outerjoin(Thing, Thing.id == Plan.id)",
            "select(Thing.name, Ledger.memo).join(Ledger, Ledger.id == Thing.id)",
            "select(Car.name, Dog.name).join(Dog, Dog.id == Car.id)",
            "select(Secret.title, Thing.name).join(Thing, Thing.id == Secret.id)",
            "select(Thing.name, Part.label).select_from(Part)"
            ".join(Thing, Thing.id == Part.thing_id)",
            "select(Thing.name, Thing_.name).join(Thing_, Thing_.id == Thing.id)",
        ]
        return st.builds(
            lambda j, p: Step(
                f"Thing_ = aliased(Thing)\nout = session.execute({j}.where({p})).all()"
            ),
            st.sampled_from(joins),
            self.predicate(THING, depth=1),
        )

    def select_subquery_from(self, entity: Entity) -> st.SearchStrategy[Step]:
        e = entity.name
        return st.builds(
            lambda p, shape: Step(
                f"sq = select({e}).where({p}).subquery()\n"
                + (
                    f"out = session.scalars(select(aliased({e}, sq))).all()"
                    if shape
                    else f"out = session.execute(select(sq.c.id, sq.c.{entity.strs[0]})).all()"
                )
            ),
            self.predicate(entity, depth=1),
            st.booleans(),
        )

    def select_cte(self, entity: Entity) -> st.SearchStrategy[Step]:
        e = entity.name
        c = entity.strs[0]
        return st.builds(
            lambda p, shape: Step(
                f"c = select({e}.id, {e}.{c}).where({p}).cte('c')\n"
                + (
                    f"out = session.execute(select(c.c.id, c.c.{c})).all()"
                    if shape == "plain"
                    else "out = session.execute(select(c.c.id, Part.label)"
                    ".join(Part, Part.thing_id == c.c.id)).all()"
                    if shape == "join"
                    else f"out = session.execute(select({e}.{c}).where({e}.id.in_(select(c.c.id))))"
                    ".all()"
                )
            ),
            self.predicate(entity, depth=1),
            st.sampled_from(["plain", "join", "in"]),
        )

    def select_union(self) -> st.SearchStrategy[Step]:
        legs = st.sampled_from(SCOPED).flatmap(
            lambda e: st.builds(
                lambda p: f"select({e.name}.id, {e.name}.{e.strs[0]}).where({p})",
                self.predicate(e, depth=1),
            )
        )
        return st.builds(
            lambda how, l1, l2, direct: Step(
                f"out = session.execute({how}({l1}, {l2})).all()"
                if direct
                else f"u = {how}({l1}, {l2}).subquery()\nout = session.execute(select(u)).all()"
            ),
            st.sampled_from(["union", "union_all", "except_", "intersect"]),
            legs,
            legs,
            st.booleans(),
        )

    def select_scalar_subquery_column(self) -> st.SearchStrategy[Step]:
        subs = [
            "select(func.count(Part.id)).where(Part.thing_id == Thing.id).scalar_subquery()",
            "select(func.count(Part.id)).scalar_subquery()",
            "select(Ledger.memo).where(Ledger.id == 11).scalar_subquery()",
            "select(func.max(Thing_.name)).where(Thing_.id == Thing.id)"
            ".correlate(Thing).scalar_subquery()",
        ]
        return st.builds(
            lambda s, p: Step(
                f"Thing_ = aliased(Thing)\nout = session.execute(select(Thing.name, {s})"
                f".where({p})).all()"
            ),
            st.sampled_from(subs),
            self.predicate(THING, depth=1),
        )

    def select_polymorphic(self) -> st.SearchStrategy[Step]:
        forms = [
            "out = session.scalars(select(Vehicle)).all()",
            "out = session.scalars(select(with_polymorphic(Vehicle, [Car]))).all()",
            "out = session.scalars(select(Vehicle).where(Vehicle.id == 1)"
            ".options(selectin_polymorphic(Vehicle, [Car]))).all()",
            "out = session.scalars(select(Animal)).all()",
            "out = session.scalars(select(Dog).where(Dog.bark.is_not(None))).all()",
            "out = session.execute(select(Car.doors, Vehicle.name)"
            ".join(Vehicle, Vehicle.id == Car.id)).all()",
        ]
        if self.enabled("unscoped-base"):
            forms += [
                "out = session.scalars(select(Entry)).all()",
                "out = session.scalars(select(with_polymorphic(Entry, [Secret]))).all()",
                "out = session.execute(select(Entry.title)).all()",
            ]
        return st.sampled_from(forms).map(Step)

    def get(self) -> st.SearchStrategy[Step]:
        composite = st.sampled_from([THING, PART, VEHICLE, CAR, ANIMAL, DOG])
        entries = [LEDGER, SECRET, *([ENTRY] if self.enabled("unscoped-base") else [])]
        return st.one_of(
            st.builds(
                lambda e, t, i, fresh: Step(
                    f"out = session.get({e.name}, {_key(e, t, i)}"
                    + (", populate_existing=True)" if fresh else ")")
                ),
                composite,
                st.sampled_from(["A", "B"]),
                st.sampled_from([1, 2, 4, 5]),
                st.booleans(),
            ),
            st.builds(
                lambda e, i: Step(f"out = session.get({e.name}, {i})"),
                st.sampled_from(entries),
                st.sampled_from([1, 11, 12, 100]),
            ),
        )

    def lazy_loads(self) -> st.SearchStrategy[Step]:
        forms = [
            "t = session.get(Thing, (A, {i}))\nout = t and [p.label for p in t.parts]",
            "t = session.get(Thing, (A, {i}))\nout = t and [p.label for p in t.loose_parts]",
            "p = session.get(Part, (A, {i}))\nout = p and p.thing and p.thing.name",
            "p = session.get(Part, (A, {i}))\nout = p and p.loose_thing and p.loose_thing.name",
            "t = session.scalars(select(Thing).where(Thing.id == {i})"
            ".options(lazyload(Thing.loose_parts))).first()\n"
            "out = t and [p.label for p in t.loose_parts]",
        ]
        return st.builds(
            lambda f, i: Step(f.format(i=i)), st.sampled_from(forms), st.sampled_from([1, 2, 3])
        )

    def refresh(self) -> st.SearchStrategy[Step]:
        return st.one_of(
            st.builds(
                lambda e, i: Step(
                    f"o = session.get({e.name}, {_key(e, 'A', i)})\n"
                    "if o is not None:\n    session.refresh(o)\nout = o"
                ),
                st.sampled_from([THING, LEDGER, CAR, DOG]),
                st.sampled_from([1, 2]),
            ),
            *([self.forged(action="session.refresh(o)")] if self.enabled("forged") else []),
        )

    # writes

    def forged(self, action: str) -> st.SearchStrategy[Step]:
        """An object built in memory to look persistent: its key may be another tenant's."""

        def build(e: Entity, t: str, i: int) -> Step:
            values = {c: "'a:forged'" for c in e.strs} | {c: "1" for c in e.ints}
            kwargs = ", ".join(f"{k}={v}" for k, v in {"id": str(i), **values}.items())
            tenant = f", tenant_id={t}" if t else ""
            return Step(
                f"o = {e.name}({kwargs}{tenant})\n"
                "make_transient_to_detached(o)\n"
                "session.add(o)\n"
                f"{action.format(column=e.strs[0])}\n"
                "session.flush()\n"
                "out = None"
            )

        return st.builds(
            build,
            st.sampled_from(
                [
                    THING,
                    LEDGER,
                    CAR,
                    DOG,
                    *([SECRET] if self.enabled("unscoped-base-writes") else []),
                ]
            ),
            st.sampled_from(["A", "B", ""]),
            st.sampled_from([1, 4, 11, 12]),
        )

    def row_values(self, entity: Entity, i: int) -> st.SearchStrategy[dict[str, str]]:
        columns = {c: self.column_value(entity, c) for c in (*entity.strs, *entity.ints)}
        if entity is PART:
            columns["thing_id"] = st.sampled_from(["1", "2", "4"])
        if entity is DOG:
            columns["bark"] = st.sampled_from(["None", "'a:woof'"])
        tenant = st.one_of(st.none(), self.tenant_value()) if entity.scoped else st.none()
        return st.builds(
            lambda values, t: (
                {"id": str(i), **entity.fixed, **values} | ({"tenant_id": t} if t else {})
            ),
            st.fixed_dictionaries(columns),
            tenant,
        )

    def inserts(self) -> st.SearchStrategy[Step]:
        unscoped_base = [ENTRY] if self.enabled("unscoped-base") else []
        entities = st.sampled_from([*SCOPED, *unscoped_base, PLAN])
        return entities.flatmap(
            lambda e: st.sampled_from(e.ids).flatmap(lambda i: self._insert(e, i))
        )

    def _insert(self, e: Entity, i: int) -> st.SearchStrategy[Step]:
        collides = _collides(e, i) or (e is SECRET and i in B_ENTRY_IDS)

        def as_kwargs(values: dict[str, str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in values.items())

        def as_dict(values: dict[str, str]) -> str:
            return "{" + ", ".join(f"{k!r}: {v}" for k, v in values.items()) + "}"

        literal_values = self.row_values(e, i).map(
            lambda v: {k: x for k, x in v.items() if "select(" not in x}
        )

        def as_binds(values: dict[str, str]) -> tuple[str, str]:
            # Every value as a bindparam in values(), filled from one execute() parameter set.
            binds = ", ".join(f"{k}=bindparam('p_{k}')" for k in values)
            params = "{" + ", ".join(f"'p_{k}': {v}" for k, v in values.items()) + "}"
            return binds, params

        bound_values = literal_values.map(
            lambda v: {k: x for k, x in v.items() if not any(c in x for c in "(.")}
        )
        # Constructors set the discriminator themselves.
        object_values = literal_values.map(
            lambda v: {k: x for k, x in v.items() if k not in e.fixed}
        )
        forms = [
            st.builds(
                lambda v: Step(
                    f"out = session.execute(insert({e.name}).values({as_kwargs(v)})).rowcount",
                    collides,
                ),
                self.row_values(e, i),
            ),
            st.builds(
                lambda v, t: Step(
                    f"out = session.execute(insert({e.name}).values({as_binds(v | t)[0]}), "
                    f"{as_binds(v | t)[1]}).rowcount",
                    collides,
                ),
                bound_values,
                st.sampled_from([{}, {"tenant_id": "A"}, {"tenant_id": "B"}])
                if e.scoped
                else st.just({}),
            ),
            st.builds(
                lambda v, strategy: Step(
                    f"session.execute(insert({e.name}), {as_dict(v)}"
                    + (f", execution_options={{'dml_strategy': '{strategy}'}}" if strategy else "")
                    + ")\nout = None",
                    collides,
                ),
                literal_values,
                st.sampled_from(["", "orm", "bulk", "raw", "auto"]),
            ),
            st.builds(
                lambda v, w, strategy: Step(
                    f"session.execute(insert({e.name}), [{as_dict(v)}, {as_dict(w)}]"
                    + (f", execution_options={{'dml_strategy': '{strategy}'}}" if strategy else "")
                    + ")\nout = None",
                    True,
                ),
                literal_values,
                self.row_values(e, 20).map(
                    lambda v: {k: x for k, x in v.items() if "select(" not in x}
                ),
                st.sampled_from(["", "orm", "bulk", "raw", "auto"]),
            ),
            st.builds(
                lambda v, w: Step(
                    f"out = session.execute(insert({e.name}).values([{as_dict(v)}, {as_dict(w)}]))"
                    ".rowcount",
                    collides,
                ),
                self.row_values(e, i),
                self.row_values(e, 21),
            ),
            st.builds(
                lambda v: Step(
                    f"out = session.scalars(insert({e.name}).values({as_kwargs(v)})"
                    f".returning({e.name})).all()",
                    collides,
                ),
                self.row_values(e, i),
            )
            if self.dialect != "mysql"
            else st.nothing(),
            st.builds(
                lambda v: Step(
                    f"session.add({e.name}({as_kwargs(v)}))\nsession.flush()\nout = None",
                    collides,
                ),
                object_values,
            ),
            st.builds(
                lambda v: Step(
                    f"out = session.merge({e.name}({as_kwargs(v)}))\nsession.flush()", collides
                ),
                object_values,
            ),
        ]
        if e in (THING, LEDGER):
            forms.append(self.insert_from_select(e, i))
        if self.dialect == "sqlite":
            forms.append(
                st.builds(
                    lambda v: Step(
                        f"out = session.execute(insert({e.name}).prefix_with('OR REPLACE')"
                        f".values({as_kwargs(v)})).rowcount",
                        collides,
                    ),
                    literal_values,
                )
            )
        if e in (THING, LEDGER, PART) and self.enabled("upsert"):
            forms.append(self.upsert(e, i, collides))
        return st.one_of(*forms)

    def insert_from_select(self, e: Entity, i: int) -> st.SearchStrategy[Step]:
        source = st.sampled_from([THING, LEDGER, PART, SECRET])
        target_str, target_int = e.strs[0], e.ints[0]

        def build(src: Entity, tenant: str | None, p: str) -> Step:
            columns = ["id", target_str, target_int]
            exprs = [f"{src.name}.id + {i * 10}", f"{src.name}.{src.strs[0]}", "7"]
            if tenant:
                columns.insert(0, "tenant_id")
                exprs.insert(0, tenant if "(" in tenant else f"literal({tenant})")
            return Step(
                f"out = session.execute(insert({e.name}).from_select({columns!r}, "
                f"select({', '.join(exprs)}).where({p}))).rowcount",
                not e.composite,
            )

        return source.flatmap(
            lambda src: st.builds(
                build,
                st.just(src),
                st.one_of(st.none(), self.tenant_value()),
                self.predicate(src, depth=1),
            )
        )

    def upsert(self, e: Entity, i: int, collides: bool) -> st.SearchStrategy[Step]:
        keys = "[Ledger.id]" if e is LEDGER else f"[{e.name}.tenant_id, {e.name}.id]"
        sets = st.one_of(
            st.builds(lambda v: {e.strs[0]: v}, self.column_value(e, e.strs[0])),
            st.builds(lambda t: {"tenant_id": t}, self.tenant_value()),
            st.just({e.strs[0]: "excluded." + e.strs[0]})
            if self.dialect != "mysql"
            else st.just({e.strs[0]: f"func.values({e.name}.{e.strs[0]})"}),
        )
        if self.dialect == "mysql":
            return st.builds(
                lambda v, s: Step(
                    f"stmt = mysql_insert({e.name}).values("
                    + ", ".join(f"{k}={x}" for k, x in v.items())
                    + ")\n"
                    + "out = session.execute(stmt.on_duplicate_key_update("
                    + ", ".join(f"{k}={x}" for k, x in s.items())
                    + ")).rowcount",
                    collides,
                ),
                self.row_values(e, i),
                sets,
            )
        insert_ = "pg_insert" if self.dialect == "postgresql" else "sqlite_insert"
        return st.builds(
            lambda v, s, nothing: Step(
                f"stmt = {insert_}({e.name}).values("
                + ", ".join(f"{k}={x}" for k, x in v.items())
                + ")\n"
                + (
                    f"out = session.execute(stmt.on_conflict_do_nothing(index_elements={keys}))"
                    ".rowcount"
                    if nothing
                    else f"out = session.execute(stmt.on_conflict_do_update(index_elements={keys}, "
                    "set_={"
                    + ", ".join(
                        f"{k!r}: " + (f"stmt.{x}" if x.startswith("excluded.") else x)
                        for k, x in s.items()
                    )
                    + "})).rowcount"
                ),
                collides,
            ),
            self.row_values(e, i),
            sets,
            st.booleans(),
        )

    def updates(self) -> st.SearchStrategy[Step]:
        entities = st.sampled_from([*SCOPED, *([ENTRY] if self.enabled("unscoped-base") else [])])
        return st.one_of(
            entities.flatmap(self.update_where),
            entities.flatmap(self.update_bulk_by_key),
            self.update_from(),
            entities.flatmap(self.delete_where),
        )

    def set_values(self, e: Entity) -> st.SearchStrategy[dict[str, str]]:
        column = st.sampled_from([*e.strs, *e.ints])
        value = column.flatmap(lambda c: st.tuples(st.just(c), self.column_value(e, c)))
        sets = st.lists(value, min_size=1, max_size=2).map(dict)
        if e.scoped:
            sets = st.one_of(
                sets, st.builds(lambda s, t: s | {"tenant_id": t}, sets, self.tenant_value())
            )
        return sets

    def update_where(self, e: Entity) -> st.SearchStrategy[Step]:
        def build(p: str, sets: dict[str, str], sync: str, via: str) -> Step:
            options = f".execution_options(synchronize_session={sync})" if sync else ""
            if via == "values":
                assignments = ", ".join(f"{k}={v}" for k, v in sets.items())
                statement = f"update({e.name}).where({p}).values({assignments}){options}"
                return Step(f"out = session.execute({statement}).rowcount")
            # Values as binds filled from the execute() parameters.
            binds = ", ".join(f"{k}=bindparam('v_{k}')" for k in sets)
            params = ", ".join(f"'v_{k}': {v}" for k, v in sets.items())
            statement = f"update({e.name}).where({p}).values({binds}){options}"
            return Step(f"out = session.execute({statement}, {{{params}}}).rowcount")

        return st.builds(
            build,
            self.predicate(e),
            self.set_values(e),
            st.sampled_from(["", "'auto'", "'fetch'", "'evaluate'", "False"]),
            st.sampled_from(["values", "params"]),
        )

    def update_bulk_by_key(self, e: Entity) -> st.SearchStrategy[Step]:
        def build(rows: list[tuple[str, int, str, str]], strategy: str) -> Step:
            dicts = []
            for tenant, i, column, value in rows:
                parts = [f"'tenant_id': {tenant}"] if e.composite else []
                parts.append(f"'id': {i}")
                dicts.append("{" + ", ".join([*parts, f"{column!r}: {value}"]) + "}")
            options = f", execution_options={{'dml_strategy': '{strategy}'}}" if strategy else ""
            return Step(
                f"session.execute(update({e.name}), [{', '.join(dicts)}]{options})\nout = None"
            )

        row = st.tuples(
            st.sampled_from(["A", "B"]),
            st.sampled_from(e.ids),
            st.sampled_from(e.strs),
            self.text_value(),
        )
        return st.builds(
            build,
            st.lists(row, min_size=1, max_size=2),
            st.sampled_from(["", "bulk", "auto", "orm", "core_only"]),
        )

    def update_from(self) -> st.SearchStrategy[Step]:
        forms = [
            "out = session.execute(update(Car).values(doors=9, name='a:car')).rowcount",
            "out = session.execute(update(Car).where(Car.id == 1).values(name='a:car')).rowcount",
            "out = session.execute(delete(Car).where(Car.id == 1)).rowcount",
            "out = session.execute(update(Dog).values(bark='a:grr')).rowcount",
            "out = session.execute(delete(Cat)).rowcount",
        ]
        if self.enabled("update-from"):
            forms += [
                "out = session.execute(update(Thing).where(Thing.id == Part.thing_id)"
                ".values(name=Part.label)).rowcount",
                "out = session.execute(update(Thing).where(Thing.id == Ledger.id)"
                ".values(qty=Ledger.amount)).rowcount",
                "out = session.execute(update(Part).where(Part.thing_id == Thing.id)"
                ".where(Thing.qty > 1000).values(label='a:x')).rowcount",
                "out = session.execute(delete(Part).where(Part.thing_id == Thing.id)"
                ".where(Thing.qty > 1000)).rowcount",
            ]
        return st.sampled_from(forms).map(Step)

    def delete_where(self, e: Entity) -> st.SearchStrategy[Step]:
        return st.builds(
            lambda p, sync: Step(
                f"out = session.execute(delete({e.name}).where({p})"
                + (f".execution_options(synchronize_session={sync})" if sync else "")
                + ").rowcount"
            ),
            self.predicate(e),
            st.sampled_from(["", "'auto'", "'fetch'", "'evaluate'", "False"]),
        )

    def rekeyed(self) -> st.SearchStrategy[Step]:
        """Tenant A's own loaded object pointed at another key, or merged without a load."""

        def build(e: Entity, i: int, how: str) -> Step:
            column = e.strs[0]
            if how == "set_committed_value":
                first = _key(e, "A", e.ids[0])
                return Step(
                    f"o = session.get({e.name}, {first})\n"
                    "if o is not None:\n"
                    f"    set_committed_value(o, 'id', {i})\n"
                    f"    o.{column} = 'a:rekeyed'\n"
                    "session.flush()\nout = None"
                )
            values = ", ".join(f"{c}='a:merged'" for c in e.strs)
            return Step(
                f"o = {e.name}(id={i}, {values}, tenant_id=A)\n"
                "make_transient_to_detached(o)\n"
                "o = session.merge(o, load=False)\n"
                f"o.{column} = 'a:merged2'\n"
                "session.flush()\nout = None"
            )

        if not self.enabled("forged"):
            return st.nothing()
        return st.builds(
            build,
            st.sampled_from([LEDGER, *([SECRET] if self.enabled("unscoped-base-writes") else [])]),
            st.sampled_from([11, 12]),
            st.sampled_from(["set_committed_value", "merge_no_load"]),
        )

    def unit_of_work(self) -> st.SearchStrategy[Step]:
        loaded = st.sampled_from([THING, LEDGER, CAR, DOG, SECRET, PART])

        def change(e: Entity, t: str, i: int, how: str, value: str) -> Step:
            get = f"o = session.get({e.name}, {_key(e, t, i)})\n"
            body = {
                "set": f"o.{e.strs[0]} = {value}",
                "move": "o.tenant_id = B",
                "delete": "session.delete(o)",
            }[how]
            return Step(f"{get}if o is not None:\n    {body}\nsession.flush()\nout = o")

        forms = [
            self.rekeyed(),
            st.builds(
                change,
                loaded,
                st.sampled_from(["A", "B"]),
                st.sampled_from([1, 2, 11]),
                st.sampled_from(["set", "move", "delete"]),
                self.text_value(),
            ),
            *(
                [
                    self.forged(action="o.{column} = 'a:forged2'"),
                    self.forged(action="session.delete(o)"),
                ]
                if self.enabled("forged")
                else []
            ),
            st.builds(
                lambda i, j: Step(
                    f"t = session.get(Thing, (A, {i}))\n"
                    "if t is not None:\n"
                    f"    t.parts.append(Part(id={j}, label='a:new'))\n"
                    "session.flush()\nout = t"
                ),
                st.sampled_from([1, 4]),
                st.sampled_from([1, 7]),
            ),
            st.builds(
                lambda i: Step(
                    f"p = session.get(Part, (A, {i}))\n"
                    "if p is not None:\n"
                    "    p.thing = session.get(Thing, (A, 3))\n"
                    "session.flush()\nout = p"
                ),
                st.sampled_from([1, 2]),
            ),
        ]
        return st.one_of(*forms)

    def legacy_bulk(self) -> st.SearchStrategy[Step]:
        def build(e: Entity, how: str, t: str, i: int) -> Step:
            values = {"id": i} | {c: "a:bulk" for c in e.strs} | {c: 1 for c in e.ints}
            if e.fixed:
                values |= {k: v.strip("'") for k, v in e.fixed.items()}
            if e is PART:
                values["thing_id"] = 1
            mapping = "{" + ", ".join(f"{k!r}: {v!r}" for k, v in values.items())
            mapping += f", 'tenant_id': {t}}}" if t else "}"
            if how == "objects":
                kwargs = ", ".join(f"{k}={v!r}" for k, v in values.items() if k not in e.fixed) + (
                    f", tenant_id={t}" if t else ""
                )
                return Step(
                    f"session.bulk_save_objects([{e.name}({kwargs})])\nout = None",
                    _collides(e, i),
                )
            return Step(
                f"session.bulk_{how}_mappings({e.name}, [{mapping}])\nout = None", _collides(e, i)
            )

        return st.builds(
            build,
            st.sampled_from(
                [
                    THING,
                    LEDGER,
                    PART,
                    CAR,
                    *([SECRET] if self.enabled("unscoped-base-writes") else []),
                ]
            ),
            st.sampled_from(["insert", "update", "objects"]),
            st.sampled_from(["A", "B", ""]),
            st.sampled_from([1, 4, 11]),
        )

    def core(self) -> st.SearchStrategy[Step]:
        """Core statements on the tables and raw SQL: the ORM filter never sees them."""
        forms = [
            "out = session.execute(select(Thing.__table__)).all()",
            "out = session.execute(select(func.count()).select_from(Part.__table__)).all()",
            "out = session.execute(text('SELECT memo FROM prop_ledger')).all()",
            "out = session.execute(Thing.__table__.update().values(name='a:core')).rowcount",
            "out = session.execute(Ledger.__table__.delete().where(Ledger.id > 10)).rowcount",
            "out = session.execute(text('UPDATE prop_ledger SET tenant_id = :b'), {'b': B})"
            ".rowcount",
            "out = session.execute(Ledger.__table__.insert().values(id=13, memo='a:core', "
            "amount=0, tenant_id=B)).rowcount",
        ]
        return st.sampled_from(forms).map(Step)

    def step(self) -> st.SearchStrategy[Step]:
        kinds = [self.reads(), self.inserts(), self.updates(), self.unit_of_work()]
        if self.enabled("legacy-bulk"):
            kinds.append(self.legacy_bulk())
        if self.enabled("core"):
            kinds.append(self.core())
        return st.one_of(*kinds)

    def programs(self, max_steps: int = 4) -> st.SearchStrategy[list[Step]]:
        return st.lists(self.step(), min_size=1, max_size=max_steps)

"""Row isolation, as a property: no generated ORM program lets tenant A touch tenant B's rows.

`tests.support.row_grammar` generates programs of ordinary SQLAlchemy ORM code (selects, joins,
subqueries, CTEs, unions, inheritance, loaders, get/merge/refresh, inserts, upserts, updates,
deletes, bulk statements, forged objects). Each program runs step by step, one transaction a
step, in tenant A's session, twice:

* in a world that holds tenants A and B, whose primary keys overlap;
* in a reference world that holds tenant A alone: what A's program does there is what it may do.

Afterwards the database owner (a plain engine, no tenant session) checks that

* tenant B's rows are exactly as seeded: none changed, deleted, added or moved in or out;
* no result and no object in A's session holds anything read from B (B's text carries "b:");
* step by step, A's results and outcomes match the reference world, and so do A's rows at the
  end. A step may raise `CrossTenantAccess` instead (a refusal is fine; a silent foreign effect is
  not). Other database errors are fine when they happen in both worlds. A step that writes a
  global key B already holds may fail or do less with B present; after such a step the two
  worlds are no longer compared, but B's rows still are.

The same programs run on SQLite, PostgreSQL and MariaDB, and on PostgreSQL again with row-level
security on (the app role is confined by policies the owner created). Bounded by the `row-property`
Hypothesis profile by default; `pytest -m deep` runs the `deep` profile.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Row, inspect, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import (
    Session,
    aliased,
    joinedload,
    lazyload,
    make_transient_to_detached,
    selectin_polymorphic,
    selectinload,
    subqueryload,
    with_polymorphic,
)
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import NullPool

from fastapi_tenancy import CrossTenantAccess, TenancyConfig, Tenant
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.isolation import RowIsolation, TenantTables
from tests.conftest import empty_database
from tests.support.hypothesis_profiles import DEEP, ROW_PROPERTY
from tests.support.rls import rls_database
from tests.support.row_grammar import (
    B_ENTRY_IDS,
    FOREIGN_MARK,
    A,
    B,
    Base,
    Grammar,
    Step,
    seed_rows,
)

TENANT_A = Tenant(identifier="prop-a", id=A)

# What step code may name, besides `session`: the models, A and B, and the SQLAlchemy API.
NAMESPACE: dict[str, Any] = {
    name: getattr(sqlalchemy, name)
    for name in (
        "and_",
        "bindparam",
        "delete",
        "except_",
        "exists",
        "func",
        "insert",
        "intersect",
        "literal",
        "or_",
        "select",
        "String",
        "text",
        "true",
        "type_coerce",
        "union",
        "union_all",
        "update",
    )
} | {
    "A": A,
    "B": B,
    "aliased": aliased,
    "joinedload": joinedload,
    "lazyload": lazyload,
    "make_transient_to_detached": make_transient_to_detached,
    "mysql_insert": mysql_insert,
    "pg_insert": pg_insert,
    "selectin_polymorphic": selectin_polymorphic,
    "selectinload": selectinload,
    "set_committed_value": set_committed_value,
    "sqlite_insert": sqlite_insert,
    "subqueryload": subqueryload,
    "with_polymorphic": with_polymorphic,
    **{mapper.class_.__name__: mapper.class_ for mapper in Base.registry.mappers},
}


@lru_cache(maxsize=4096)
def compiled(code: str) -> Callable[[Session], Any]:
    source = "def step(session):\n" + "".join(f"    {line}\n" for line in code.splitlines())
    # The step's locals too: the identity map holds objects weakly, so a loaded object the
    # step did not return would otherwise be gone before anyone could look at it.
    source += "    return out, locals()\n"
    namespace = dict(NAMESPACE)
    exec(compile(source, "<step>", "exec"), namespace)
    step: Callable[[Session], Any] = namespace["step"]
    return step


def plain(value: Any, depth: int = 0) -> Any:
    """A comparable copy of what a step read; reads only what is loaded (never loads more)."""
    if isinstance(value, Row):
        return tuple(plain(item, depth) for item in value)
    if isinstance(value, list | tuple | set):
        return sorted((plain(item, depth) for item in value), key=repr)
    if hasattr(value, "_sa_instance_state"):
        if depth > 1:
            return type(value).__name__
        state = inspect(value).dict
        return (
            type(value).__name__,
            tuple(
                sorted(
                    (key, plain(item, depth + 1)) for key, item in state.items() if key[0] != "_"
                )
            ),
        )
    return value


def foreign_text(value: Any) -> bool:
    if isinstance(value, str):
        return FOREIGN_MARK in value
    if isinstance(value, list | tuple):
        return any(foreign_text(item) for item in value)
    return False


def foreign_objects(session: Session, seen: list[Any]) -> list[str]:
    """Objects the session held or loaded with text read from tenant B (never written by A)."""
    found = []
    candidates = {id(obj): obj for obj in [*session.identity_map.values(), *session.new, *seen]}
    for obj in candidates.values():
        if not hasattr(obj, "_sa_instance_state"):
            continue
        loaded = inspect(obj).dict
        if any(foreign_text(value) for value in loaded.values() if isinstance(value, str)):
            found.append(
                f"{type(obj).__name__}{ {k: v for k, v in loaded.items() if k[0] != '_'} }"
            )
    return found


@dataclass
class Outcome:
    kind: str  # "ok", "refused" (CrossTenantAccess) or the error's class name
    out: Any = None
    detail: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    foreign_reads: list[str] = field(default_factory=list)
    loaded: list[Any] = field(default_factory=list)  # objects loaded by the current step
    warnings: list[str] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class World:
    """One backend: the owner's plain engine and tenant A's isolation."""

    owner: AsyncEngine
    isolation: RowIsolation
    dialect: str

    def grammar(self) -> Grammar:
        return Grammar(self.dialect, rls=self.isolation.row_level_security)

    async def seed(self, *, with_b: bool) -> None:
        rows = seed_rows(with_b=with_b)
        async with self.owner.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())
            for table in Base.metadata.sorted_tables:
                if rows[table.name]:
                    await conn.execute(table.insert(), rows[table.name])

    async def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        async with self.owner.connect() as conn:
            return {
                table.name: sorted(
                    (dict(row._mapping) for row in await conn.execute(select(table))), key=repr
                )
                for table in Base.metadata.sorted_tables
            }

    async def run(self, program: list[Step], *, with_b: bool) -> Run:
        await self.seed(with_b=with_b)
        run = Run()
        async with self.isolation.session(TENANT_A) as session:
            sqlalchemy.event.listen(
                session.sync_session,
                "loaded_as_persistent",
                lambda _session, obj: run.loaded.append(obj),
            )
            for step in program:
                run.outcomes.append(await self._step(session, step, run))
        run.rows = await self.snapshot()
        return run

    async def _step(self, session: Any, step: Step, run: Run) -> Outcome:
        code = compiled(step.code)

        def execute(sync_session: Session) -> Any:
            names: dict[str, Any] = {}
            try:
                out, names = code(sync_session)
                return plain(out)
            finally:
                seen = [*run.loaded, *names.values()]
                run.foreign_reads.extend(foreign_objects(sync_session, seen))
                run.loaded.clear()

        try:
            # Warnings are recorded, never raised: a step runs as it would in production, where a
            # warning does not stop the statement (pytest's filterwarnings=error would).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = await session.run_sync(execute)
                await session.commit()
            for warning in caught:
                run.warnings.append(str(warning.message).splitlines()[0][:200])
        except CrossTenantAccess as exc:
            await session.rollback()
            return Outcome("refused", detail=str(exc))
        except (NameError, SyntaxError):
            raise  # the grammar wrote a broken program
        except Exception as exc:
            # Any other failure leaves nothing behind (the transaction is rolled back) and is
            # compared with the reference world like any other outcome.
            await session.rollback()
            return Outcome(type(exc).__name__, detail=(str(exc).splitlines() or [""])[0][:300])
        finally:
            # Each step starts from an empty identity map, so what it loads (and so what it
            # returns) never depends on which objects the garbage collector kept from before.
            session.expunge_all()
        if foreign_text(out):
            run.foreign_reads.append(f"result {out!r}")
        return Outcome("ok", out)


def owned_by_b(table: str, row: dict[str, Any]) -> bool:
    return row.get("tenant_id") == B or (table == "prop_entries" and row["id"] in B_ENTRY_IDS)


def without_b(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {t: [r for r in rs if not owned_by_b(t, r)] for t, rs in rows.items()}


def problems(
    program: list[Step], alone: Run, shared: Run, label: Callable[[str], None]
) -> Iterator[str]:
    """Every way the run beside tenant B (``shared``) broke isolation; see the module docstring."""
    seeded = seed_rows(with_b=True)
    for table, rows in shared.rows.items():
        expected = sorted((r for r in seeded[table] if owned_by_b(table, r)), key=repr)
        found = [r for r in rows if owned_by_b(table, r)]
        if found != expected:
            lost = [r for r in expected if r not in found]
            gained = [r for r in found if r not in expected]
            yield f"{table}: tenant B's rows changed: lost {lost}, gained {gained}"
        for row in rows:
            if not owned_by_b(table, row) and foreign_text(list(row.values())):
                yield f"{table}: tenant B's text copied into {row}"
    for table, rows in alone.rows.items():
        if any(row.get("tenant_id") == B for row in rows):
            yield f"{table}: tenant A wrote rows for tenant B: {rows}"
    for read in shared.foreign_reads:
        yield f"tenant B's data reached tenant A's session: {read}"
    for index, (step, mine, theirs) in enumerate(
        zip(program, alone.outcomes, shared.outcomes, strict=True)
    ):
        if theirs.kind == "refused" or (mine.kind, mine.out) == (theirs.kind, theirs.out):
            if theirs.kind != mine.kind:
                label(f"step refused beside B only: {theirs.detail}")
                return
            continue
        if step.collides:
            label("a write collided with a global key of B")
            return
        yield (
            f"step {index + 1} did something else beside tenant B:\n{step.code}\n"
            f"  alone: {mine}\n  beside B: {theirs}"
        )
        return
    if without_b(alone.rows) != without_b(shared.rows):
        yield (
            "tenant A's rows differ from the reference world: "
            f"alone {without_b(alone.rows)}, beside B {without_b(shared.rows)}"
        )


async def check(
    world: World, program: list[Step], label: Callable[[str], None] = lambda _: None
) -> None:
    """Run ``program`` alone and beside tenant B; fail with every isolation problem found."""
    alone = await world.run(program, with_b=False)
    shared = await world.run(program, with_b=True)
    for outcome in shared.outcomes:
        label(f"outcome: {outcome.kind}")
    for warning in shared.warnings:
        label(f"warning: {warning}")
    found = list(problems(program, alone, shared, label))
    assert not found, "\n".join(found)


async def check_generated(world: World, program: list[Step]) -> None:
    note(
        f"program ({world.dialect}), one transaction per step, in tenant A's session:\n"
        + "\n".join(f"--- step {i + 1}\n{step.code}" for i, step in enumerate(program))
    )
    await check(world, program, event)


# --- worlds ---------------------------------------------------------------------------------------

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
    pytest.param("postgres-rls", marks=pytest.mark.postgres, id="postgres-rls"),
]


@asynccontextmanager
async def open_world(kind: str, tmp_path: Path) -> AsyncIterator[World]:
    if kind == "postgres-rls":
        async with rls_database(metadata=Base.metadata) as database:
            # The owner of the checks is a superuser here: the owner role is itself under the
            # forced policies and would see no row.
            owner = create_async_engine(database.superuser_url, poolclass=NullPool)
            app = central_engine(TenancyConfig(database_url=database.app_url))
            isolation = RowIsolation(app, TenantTables(Base.metadata), row_level_security=True)
            try:
                await isolation.start()
                yield World(owner, isolation, "postgresql")
            finally:
                await app.dispose()
                await owner.dispose()
        return
    async with empty_database(kind, tmp_path) as url:
        engine = central_engine(TenancyConfig(database_url=url))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            yield World(
                engine, RowIsolation(engine, TenantTables(Base.metadata)), engine.dialect.name
            )
        finally:
            await engine.dispose()


@pytest.fixture(params=BACKENDS)
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(request.param, tmp_path) as world:
        yield world


@settings(ROW_PROPERTY)
@given(data=st.data())
async def test_generated_orm_programs_never_cross_tenants(
    world: World, data: st.DataObject
) -> None:
    program = data.draw(world.grammar().programs(), label="program")
    await check_generated(world, program)


@pytest.mark.deep
@settings(DEEP)
@given(data=st.data())
async def test_generated_orm_programs_never_cross_tenants_deep(
    world: World, data: st.DataObject
) -> None:
    program = data.draw(world.grammar().programs(max_steps=8), label="program")
    await check_generated(world, program)


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("out = session.execute(select(Thing.__table__)).all()", "reached tenant A's session"),
        ("out = session.execute(Ledger.__table__.delete()).rowcount", "tenant B's rows changed"),
        (
            "out = session.execute(select(func.count()).select_from(Part.__table__)).all()",
            "did something else beside tenant B",
        ),
    ],
)
async def test_the_check_catches_core_statements_the_orm_filter_never_sees(
    tmp_path: Path, code: str, found: str
) -> None:
    # Core statements on Table objects are documented as unfiltered: each check must see them.
    async with open_world("sqlite", tmp_path) as world:
        with pytest.raises(AssertionError, match=found):
            await check(world, [Step(code)])


@pytest.mark.parametrize(
    "code",
    [
        "out = session.execute(update(Car).where(Car.name.like('%1%')).values(name='a:new'))"
        ".rowcount",
        "out = session.execute(update(Car).where(Car.doors > 0).values(name='a:x')).rowcount",
        "out = session.execute(update(Car).where(Car.name != '').values(doors=9)).rowcount",
        "out = session.execute(delete(Car).where(Car.name.like('%1%'))).rowcount",
    ],
)
async def test_a_joined_subclass_statement_naming_base_columns_stays_in_the_tenant(
    world: World, code: str
) -> None:
    # Found by the property run on MariaDB: the ORM names the subclass and base tables of such
    # an UPDATE without joining them, so every tenant's base rows matched.
    await check(world, [Step(code)])

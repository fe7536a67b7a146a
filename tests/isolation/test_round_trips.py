"""What a tenant transaction sends to PostgreSQL: as many round trips as a bare SQLAlchemy app.

Every message a connection sends is recorded on the client: SQLAlchemy's statements (asyncpg
sends each as one prepared-statement round trip) and asyncpg's simple queries (BEGIN, COMMIT,
ROLLBACK, the session reset, a ping), through asyncpg's query logger. A one-statement request is
three round trips under every strategy: ``BEGIN`` (with the schema or row-level security binding
in the same message), the statement, and ``ROLLBACK`` (with the pool's session reset in the same
message). A bare app sends the same three.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy
from fastapi_tenancy import engines as engines_module
from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.pgwire import POSTGRES_SESSION_RESET, string_literal
from tests.isolation.test_rls import rls_config
from tests.support.backends import isolation_config
from tests.support.hypothesis_profiles import ROW_PROPERTY
from tests.support.models import Item
from tests.support.rls import rls_database
from tests.support.services import POSTGRES_URL

pytestmark = pytest.mark.postgres
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
TENANTS = ("alpha", "bravo")


@dataclass
class Wire:
    """The messages sent by the connections of one engine, in the order each source saw them."""

    messages: list[str] = field(default_factory=list)

    def logged(self, record: Any) -> None:
        self.messages.append(record.query)

    async def take(self) -> list[str]:
        await asyncio.sleep(0.05)  # asyncpg hands query-log records to the loop (call_soon)
        taken, self.messages[:] = list(self.messages), []
        return taken


@contextmanager
def recording(engine: AsyncEngine) -> Iterator[Wire]:
    wire = Wire()
    attached: list[Any] = []

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver not in attached:
            driver.add_query_logger(wire.logged)
            attached.append(driver)

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        wire.messages.append(sql)

    # Inserted first: the connection is recorded before the pre-ping hook may ping it.
    event.listen(engine.sync_engine, "checkout", checkout, insert=True)
    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    try:
        yield wire
    finally:
        event.remove(engine.sync_engine, "checkout", checkout)
        event.remove(engine.sync_engine, "before_cursor_execute", statement)
        for driver in attached:
            driver.remove_query_logger(wire.logged)


def begins(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("BEGIN")]


def ends(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith(("ROLLBACK", "COMMIT"))]


@pytest.fixture
async def tenancy(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Tenancy]:
    strategy, binding = request.param
    config = isolation_config((strategy, database_url), schema_binding=binding)
    async with Tenancy(config) as tenancy:
        await seed(tenancy)
        yield tenancy


async def seed(tenancy: Tenancy) -> None:
    for identifier in TENANTS:
        await tenancy.create_tenant(identifier)
        async with tenancy.session(identifier) as session:
            session.add_all(Item(name=f"{identifier}:{n}") for n in range(2))
            await session.commit()


STRATEGIES = pytest.mark.parametrize(
    "tenancy",
    [
        pytest.param(("row", "auto"), id="row"),
        pytest.param(("schema", "search_path"), id="schema-search_path"),
    ],
    indirect=True,
)


async def read_names(tenancy: Tenancy, identifier: str) -> list[str]:
    async with tenancy.session(identifier) as session:
        return sorted((await session.scalars(select(Item.name))).all())


@on_postgres
@STRATEGIES
async def test_a_one_statement_request_is_three_round_trips(tenancy: Tenancy) -> None:
    await read_names(tenancy, "alpha")  # the statement is prepared on this connection
    with recording(tenancy.engine) as wire:
        assert await read_names(tenancy, "alpha") == ["alpha:0", "alpha:1"]
        messages = await wire.take()
    assert len(messages) == 3, messages
    assert len(begins(messages)) == 1
    assert ends(messages) == [f"ROLLBACK; {POSTGRES_SESSION_RESET}"]


@on_postgres
@pytest.mark.parametrize(
    "tenancy", [pytest.param(("schema", "search_path"), id="schema-search_path")], indirect=True
)
async def test_the_search_path_rides_on_every_begin_after_a_commit_too(tenancy: Tenancy) -> None:
    tenant = await tenancy.get_tenant("alpha")
    assert tenant is not None
    assert tenant.storage_name is not None
    # The test models include a shared table (plans): the shared schema follows the tenant's.
    path = string_literal(f'"{tenant.storage_name}", "public", pg_temp')
    with recording(tenancy.engine) as wire:
        async with tenancy.session("alpha") as session:
            first = (await session.execute(text("SELECT name FROM items"))).scalars().all()
            await session.commit()
            second = (await session.execute(text("SELECT name FROM items"))).scalars().all()
        messages = await wire.take()
    assert sorted(first) == sorted(second) == ["alpha:0", "alpha:1"]
    expected = f"BEGIN; SELECT set_config(E'search_path', {path}, true)"
    assert begins(messages) == [expected, expected]
    assert not any("set_config" in m for m in messages if not m.startswith("BEGIN"))


async def test_row_level_security_binds_the_tenant_with_every_begin() -> None:
    async with (
        rls_database() as database,
        Tenancy(rls_config(database.app_url)) as tenancy,
    ):
        await seed(tenancy)
        bravo = await tenancy.get_tenant("bravo")
        assert bravo is not None
        with recording(tenancy.engine) as wire:
            async with tenancy.session("bravo") as session:
                raw = (await session.execute(text("SELECT name FROM items"))).scalars().all()
                await session.commit()
                again = (await session.execute(text("SELECT name FROM items"))).scalars().all()
            messages = await wire.take()
    assert sorted(raw) == sorted(again) == ["bravo:0", "bravo:1"]
    expected = f"BEGIN; SELECT set_config(E'fastapi_tenancy.tenant_id', E'{bravo.id}', true)"
    assert begins(messages) == [expected, expected]
    # A bare app's six: BEGIN, SELECT, COMMIT, BEGIN, SELECT, ROLLBACK; each end carries the reset.
    assert len(messages) == 6, messages
    assert ends(messages) == [
        f"COMMIT; {POSTGRES_SESSION_RESET}",
        f"ROLLBACK; {POSTGRES_SESSION_RESET}",
    ]


@on_postgres
@STRATEGIES
async def test_a_connection_in_use_is_not_pinged_an_idle_one_is(
    tenancy: Tenancy, monkeypatch: pytest.MonkeyPatch
) -> None:
    await read_names(tenancy, "alpha")
    with recording(tenancy.engine) as wire:
        await read_names(tenancy, "alpha")
        assert ";" not in await wire.take()
        monkeypatch.setattr(engines_module, "PRE_PING_IDLE_SECONDS", 0.0)
        await read_names(tenancy, "alpha")
        assert ";" in await wire.take()


@on_postgres
@STRATEGIES
async def test_a_terminated_connection_answers_an_error_never_another_tenants_rows(
    tenancy: Tenancy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No ping at all: the request after the kill meets the dead connection unless the client
    # already saw it close. Either way it fails cleanly or reads its own rows; the next succeeds.
    monkeypatch.setattr(engines_module, "PRE_PING_IDLE_SECONDS", float("inf"))
    for identifier in TENANTS:
        await read_names(tenancy, identifier)
    admin = create_async_engine(tenancy.config.database_url, poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            killed = await conn.scalars(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
            )
            assert any(killed)
    finally:
        await admin.dispose()
    for identifier in TENANTS * 2:
        outcome = await attempt(read_names(tenancy, identifier))
        if isinstance(outcome, Exception):
            assert is_unavailable(outcome), outcome
        else:
            assert outcome == [f"{identifier}:0", f"{identifier}:1"]
    assert await read_names(tenancy, "bravo") == ["bravo:0", "bravo:1"]


async def attempt(reading: Awaitable[list[str]]) -> list[str] | Exception:
    try:
        return await reading
    except Exception as exc:
        return exc


# One step of a generated run: a tenant, and what its session does on a pooled connection.
STEP = st.tuples(
    st.sampled_from(TENANTS),
    st.lists(st.sampled_from(["orm", "raw", "commit", "rollback", "session_set"]), max_size=5),
)


@on_postgres
@pytest.mark.parametrize(
    "tenancy", [pytest.param(("schema", "search_path"), id="schema-search_path")], indirect=True
)
@settings(ROW_PROPERTY)
@given(steps=st.lists(STEP, min_size=1, max_size=8))
async def test_generated_sessions_on_pooled_connections_stay_confined(
    tenancy: Tenancy, steps: list[tuple[str, list[str]]]
) -> None:
    for identifier, actions in steps:
        mine = [f"{identifier}:0", f"{identifier}:1"]
        async with tenancy.session(identifier) as session:
            for action in actions:
                await act(session, action, mine)
            await act(session, "raw", mine)


async def act(session: AsyncSession, action: str, mine: list[str]) -> None:
    if action == "orm":
        assert sorted((await session.scalars(select(Item.name))).all()) == mine
    elif action == "raw":
        rows = (await session.execute(text("SELECT name FROM items"))).scalars().all()
        assert sorted(rows) == mine
    elif action == "commit":
        await session.commit()
    elif action == "rollback":
        await session.rollback()
    else:
        # A session-level search_path names the other schema; the binding of the next BEGIN and
        # the reset at check-in keep it from reaching any later transaction.
        await session.execute(text("SET search_path TO public"))
        await session.commit()


@pytest.mark.parametrize("value", ["plain", "it's", "back\\slash", "'; DROP TABLE x; --", "é\n"])
async def test_string_literals_read_back_as_written(value: str) -> None:
    engine = create_async_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            assert await driver.fetchval(f"SELECT {string_literal(value)}") == value
    finally:
        await engine.dispose()


def test_a_nul_character_is_refused_in_a_literal() -> None:
    with pytest.raises(ValueError, match="NUL"):
        string_literal("a\x00b")

"""The bulk revision scan agrees with reading each tenant, and never skips a tenant behind."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.config import Config
from hypothesis import given, note, settings
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastapi_tenancy import Tenancy, Tenant
from fastapi_tenancy.migrations import upgrade
from fastapi_tenancy.migrations.scan import SCAN_BATCH, scan_revisions
from fastapi_tenancy.migrations.targets import connect, target_for
from fastapi_tenancy.migrations.versions import read_revisions
from tests.conftest import empty_database
from tests.support.hypothesis_profiles import DEEP, ROW_PROPERTY
from tests.support.migration_scripts import FIRST, SECOND, alembic_config, empty_config

BACKENDS = [
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]
FLEET = 6
# How a tenant's storage can look when a run starts: at a revision, never migrated, or broken.
READABLE = ("no table", "empty table", FIRST, SECOND)
BROKEN = ("no schema", "malformed table")
STATES = READABLE + BROKEN


@dataclass
class Fleet:
    tenancy: Tenancy
    tenants: list[Tenant]
    script: Config

    @property
    def engine(self) -> AsyncEngine:
        return self.tenancy.engine

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"


@pytest.fixture(params=BACKENDS)
async def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Fleet]:
    async with empty_database(request.param, tmp_path) as url:
        async with Tenancy(empty_config(("schema", url))) as tenancy:
            tenants = [await tenancy.create_tenant(f"fleet-{n}") for n in range(FLEET)]
            yield Fleet(tenancy, tenants, alembic_config(tmp_path / "alembic"))


async def put(fleet: Fleet, tenant: Tenant, state: str) -> None:
    """Make ``tenant``'s storage look like ``state``, from scratch."""
    name = tenant.storage_name
    quoted = f'"{name}"' if fleet.postgres else f"`{name}`"
    async with fleet.engine.begin() as conn:
        if fleet.postgres:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        else:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
        if state == "no schema":
            return
        await conn.execute(text(f"CREATE SCHEMA {quoted}"))
        if state == "no table":
            return
        if state == "malformed table":
            await conn.execute(text(f"CREATE TABLE {quoted}.alembic_version (version INTEGER)"))
            return
        await conn.execute(
            text(
                f"CREATE TABLE {quoted}.alembic_version "
                "(version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            )
        )
        if state == "empty table":
            return
        note_column = ", note VARCHAR(100)" if state == SECOND else ""
        await conn.execute(
            text(
                f"CREATE TABLE {quoted}.items (id INTEGER PRIMARY KEY, "
                f"tenant_id VARCHAR(64) NOT NULL, name VARCHAR(100) NOT NULL{note_column})"
            )
        )
        await conn.execute(text(f"INSERT INTO {quoted}.alembic_version VALUES ('{state}')"))


async def read_one(fleet: Fleet, tenant: Tenant) -> frozenset[str] | None:
    """What the per-tenant path reads for ``tenant``; ``None`` when it cannot read it."""
    target = target_for(fleet.tenancy, tenant)
    try:
        async with connect(fleet.tenancy, target) as conn, conn.begin():
            return await read_revisions(conn, target.schema)
    except Exception:
        return None


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def check_fleet(fleet: Fleet, states: list[str]) -> None:
    note(f"states: {states}")
    for tenant, state in zip(fleet.tenants, states, strict=True):
        await put(fleet, tenant, state)
    names = [tenant.storage_name or "" for tenant in fleet.tenants]

    with counted(fleet.engine) as statements:
        scanned = await scan_revisions(fleet.engine, names)

    assert len(statements) <= 3  # the catalog twice, one UNION ALL over the version tables
    for tenant, state in zip(fleet.tenants, states, strict=True):
        one = await read_one(fleet, tenant)
        name = tenant.storage_name or ""
        if state in READABLE:
            assert scanned[name] == one, (state, scanned.get(name), one)
        else:
            assert name not in scanned or scanned[name] == one

    report = await upgrade(fleet.tenancy, fleet.script)

    outcomes = {m.identifier: m.outcome for m in report.migrations}
    for tenant, state in zip(fleet.tenants, states, strict=True):
        expected = "skipped" if state == SECOND else "failed" if state in BROKEN else "upgraded"
        assert outcomes[tenant.identifier] == expected, state
        if state in READABLE:
            assert await read_one(fleet, tenant) == frozenset({SECOND})

    # After the partial failure, a re-run skips the upgraded tenants and retries the broken ones.
    again = await upgrade(fleet.tenancy, fleet.script)

    outcomes = {m.identifier: m.outcome for m in again.migrations}
    for tenant, state in zip(fleet.tenants, states, strict=True):
        assert outcomes[tenant.identifier] == ("failed" if state in BROKEN else "skipped"), state


fleet_states = st.lists(st.sampled_from(STATES), min_size=FLEET, max_size=FLEET)


@settings(ROW_PROPERTY, max_examples=8)
@given(states=fleet_states)
async def test_the_scan_agrees_with_each_tenant_and_never_skips_one_behind(
    fleet: Fleet, states: list[str]
) -> None:
    await check_fleet(fleet, states)


@pytest.mark.deep
@settings(DEEP, max_examples=100)
@given(states=fleet_states)
async def test_the_scan_agrees_with_each_tenant_and_never_skips_one_behind_deep(
    fleet: Fleet, states: list[str]
) -> None:
    await check_fleet(fleet, states)


async def test_a_no_op_upgrade_reads_the_fleet_without_touching_a_tenant(fleet: Fleet) -> None:
    first = await upgrade(fleet.tenancy, fleet.script)
    assert first.upgraded == FLEET

    with counted(fleet.engine) as statements:
        again = await upgrade(fleet.tenancy, fleet.script)

    assert again.skipped == FLEET
    assert all(m.from_revision == m.to_revision == SECOND for m in again.migrations)
    # The tenant list, the catalog twice and one UNION ALL: no tenant transaction, no lock.
    assert len(statements) == 4, statements


@pytest.mark.slow
@pytest.mark.postgres
async def test_a_no_op_upgrade_of_500_tenants_reads_their_versions_in_a_few_queries(
    tmp_path: Path,
) -> None:
    async with (
        empty_database("postgres", tmp_path) as url,
        Tenancy(empty_config(("schema", url))) as tenancy,
    ):
        gate = asyncio.Semaphore(4)

        async def create(n: int) -> Tenant:
            async with gate:
                return await tenancy.create_tenant(f"many-{n}")

        tenants = await asyncio.gather(*(create(n) for n in range(500)))
        async with tenancy.engine.connect() as conn:
            await stamp(conn, [tenant.storage_name or "" for tenant in tenants])
        script = alembic_config(tmp_path / "alembic")

        with counted(tenancy.engine) as statements:
            report = await upgrade(tenancy, script)

        assert report.skipped == 500
        assert len(statements) == 1 + 2 + math.ceil(500 / SCAN_BATCH)


async def stamp(conn: AsyncConnection, schemas: list[str]) -> None:
    """Put every schema at ``SECOND`` without Alembic (what the migration leaves is not read)."""
    for schema in schemas:
        async with conn.begin():
            await conn.execute(
                text(f'CREATE TABLE "{schema}".alembic_version (version_num VARCHAR(32))')
            )
            await conn.execute(
                text(f"INSERT INTO \"{schema}\".alembic_version VALUES ('{SECOND}')")
            )

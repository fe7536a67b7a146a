"""The central tables' own Alembic history: head equals the table definitions on every backend,
a database of the previous release upgrades with its rows kept, starts upgrade under a lock or
only check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.migrations.central import (
    CentralTablesBehind,
    central_differences,
    central_head,
    central_revision,
    downgrade_central,
    upgrade_central,
)
from tests.support.backends import all_databases
from tests.support.cli import cli_environment, run_cli

# The central tables exactly as the release before the history made them (commit 802037b,
# store/sqlalchemy.py and audit.py): frozen here, whatever the definitions become.
PREVIOUS = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)
_UTC = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
PREVIOUS_TENANTS = Table(
    "tenancy_tenants",
    PREVIOUS,
    Column("id", String(64), primary_key=True),
    Column("identifier", String(63), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("metadata", JSON, nullable=False),
    Column("created_at", _UTC, nullable=False),
    Column("updated_at", _UTC, nullable=False),
    Column("deleted_at", _UTC, nullable=True),
    Column("storage_name", String(64), nullable=True, unique=True),
    Column("database_url", Text, nullable=True),
    Column("provisioning_attempts", Integer, nullable=False, server_default="0"),
    mysql_charset="utf8mb4",
)
PREVIOUS_AUDIT_METADATA = MetaData()
PREVIOUS_AUDIT = Table(
    "tenancy_audit",
    PREVIOUS_AUDIT_METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("tenant", String(63), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(255), nullable=True),
    Column("path", String(2048), nullable=True),
    Column("status", Integer, nullable=True),
    mysql_charset="utf8mb4",
)
WHEN = datetime(2026, 11, 20, 9, 30, tzinfo=UTC).replace(tzinfo=None)
TENANT_ROWS = [
    {
        "id": "a" * 32,
        "identifier": "acme",
        "name": "Acme Ünïcode",
        "status": "active",
        "metadata": {"plan": "pro", "seats": 12},
        "created_at": WHEN,
        "updated_at": WHEN,
        "deleted_at": None,
        "storage_name": "tenant_acme",
        "database_url": None,
        "provisioning_attempts": 1,
    },
    {
        "id": "b" * 32,
        "identifier": "globex",
        "name": "Globex",
        "status": "suspended",
        "metadata": {},
        "created_at": WHEN,
        "updated_at": WHEN,
        "deleted_at": None,
        "storage_name": None,
        "database_url": "postgresql+asyncpg://app@db/globex",
        "provisioning_attempts": 0,
    },
]
AUDIT_ROWS = [
    {
        "at": WHEN,
        "tenant_id": "a" * 32,
        "tenant": "acme",
        "action": "created",
        "actor": "ops",
        "path": None,
        "status": None,
    }
]


def engine_for(url: str) -> AsyncEngine:
    return create_async_engine(url, poolclass=NullPool)


async def previous_release_database(url: str) -> None:
    engine = engine_for(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(PREVIOUS.create_all)
            await conn.run_sync(PREVIOUS_AUDIT_METADATA.create_all)
            await conn.execute(PREVIOUS_TENANTS.insert(), TENANT_ROWS)
            await conn.execute(PREVIOUS_AUDIT.insert(), AUDIT_ROWS)
    finally:
        await engine.dispose()


def naive(row: Mapping[Any, Any]) -> dict[str, Any]:
    """``row`` with times as the naive UTC values inserted (PostgreSQL reads them aware)."""
    return {
        key: value.astimezone(UTC).replace(tzinfo=None)
        if isinstance(value, datetime) and value.tzinfo is not None
        else value
        for key, value in row.items()
    }


async def differences(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as conn:
        return await central_differences(conn)


@all_databases
async def test_a_previous_release_database_upgrades_with_migrate_central_and_keeps_its_rows(
    database_url: str, tmp_path: Path
) -> None:
    await previous_release_database(database_url)
    env = cli_environment(database_url)

    behind = run_cli("migrate", "central", "--check", env=env, cwd=tmp_path)
    assert behind.returncode == 1, behind.stderr
    assert "revision none, behind" in behind.stdout

    result = run_cli("migrate", "central", "--json", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert (done["outcome"], done["from"], done["to"]) == ("upgraded", None, central_head())
    engine = engine_for(database_url)
    try:
        assert await differences(engine) == []
        async with engine.connect() as conn:
            tenants = (await conn.execute(select(PREVIOUS_TENANTS))).mappings().all()
            audit = (await conn.execute(select(PREVIOUS_AUDIT))).mappings().all()
        assert [naive(row) for row in tenants] == TENANT_ROWS
        assert [{k: v for k, v in naive(row).items() if k != "id"} for row in audit] == AUDIT_ROWS
    finally:
        await engine.dispose()

    again = run_cli("migrate", "central", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("central tables skipped")
    assert run_cli("migrate", "central", "--check", env=env, cwd=tmp_path).returncode == 0

    # The runtime reads the old records and uses the tables the upgrade added.
    async with Tenancy(TenancyConfig(database_url=database_url)) as tenancy:
        acme = await tenancy.get_tenant("acme")
        assert acme is not None
        assert (acme.name, acme.metadata, acme.provisioning_attempts) == (
            "Acme Ünïcode",
            {"plan": "pro", "seats": 12},
            1,
        )
        await tenancy.add_domain("acme", "acme.example.com")
        assert [d.host for d in await tenancy.list_domains("acme")] == ["acme.example.com"]


@all_databases
async def test_the_head_of_the_central_history_equals_the_table_definitions(
    database_url: str,
) -> None:
    engine = engine_for(database_url)
    try:
        # Revision by revision from an empty database, not from the definitions.
        first = await upgrade_central(engine, revision="0001")
        assert (first.outcome, first.to_revision) == ("upgraded", "0001")
        rest = await upgrade_central(engine)
        assert (rest.outcome, rest.from_revision, rest.to_revision) == (
            "upgraded",
            "0001",
            central_head(),
        )
        assert await differences(engine) == []

        back = await downgrade_central(engine, "0001")
        assert (back.outcome, back.to_revision) == ("downgraded", "0001")
        assert await differences(engine) != []
        await upgrade_central(engine)
        assert await differences(engine) == []
        assert (await upgrade_central(engine)).outcome == "skipped"
    finally:
        await engine.dispose()


@all_databases
async def test_a_new_database_is_created_from_the_definitions_and_stamped(
    database_url: str,
) -> None:
    engine = engine_for(database_url)
    try:
        created = await upgrade_central(engine)
        assert (created.outcome, created.from_revision, created.to_revision) == (
            "created",
            None,
            central_head(),
        )
        assert await central_revision(engine) == central_head()
        assert await differences(engine) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
        pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
    ],
    indirect=True,
)
async def test_concurrent_starts_migrate_the_central_tables_once(database_url: str) -> None:
    await previous_release_database(database_url)
    engines = [engine_for(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(upgrade_central(engine) for engine in engines))
        assert sorted(result.outcome for result in results) == ["skipped", "skipped", "upgraded"]
        assert await differences(engines[0]) == []
    finally:
        for engine in engines:
            await engine.dispose()


async def test_check_mode_refuses_to_start_behind_and_starts_once_migrated(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await previous_release_database(url)
    config = TenancyConfig(database_url=url, central_migrations="check")

    with pytest.raises(CentralTablesBehind, match="fastapi-tenancy migrate central"):
        async with Tenancy(config):
            pass

    engine = engine_for(url)
    try:
        assert await central_revision(engine) is None  # check mode changed nothing
        await upgrade_central(engine)
    finally:
        await engine.dispose()
    async with Tenancy(config) as tenancy:
        assert [t.identifier for t in await tenancy.list_tenants()] == ["acme", "globex"]

"""``alembic revision --autogenerate`` with the tenant env.py: compared against a scratch schema
or database at head (never a real tenant), shared tables left out, the revision then applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import alembic
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.migrations import upgrade
from fastapi_tenancy.migrations.autogenerate import SCRATCH_PREFIX
from tests.support.backends import database_url_template, isolation_config
from tests.support.migration_scripts import FIRST, SECOND, alembic_config
from tests.support.migration_storage import revision, tenant_tables

# The env.py of an app whose models are tests.support.models: Item and Note are TenantScoped,
# Plan is shared. Against the script's head (items with a note column), autogenerate finds the
# notes table new and items.note gone.
ENV_PY = """\
from fastapi_tenancy.migrations import run_migrations
from tests.support.models import Base

run_migrations(target_metadata=Base.metadata)
"""

CASES = [
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    # Three CREATE DATABASE (two tenants and the scratch one) take 10-70 s on a loaded machine;
    # the scratch-database path runs by default on MariaDB (schema-mysql).
    pytest.param(
        ("database", "postgres"),
        marks=[pytest.mark.postgres, pytest.mark.slow],
        id="database-postgres",
    ),
    pytest.param(("row", "sqlite"), id="row-sqlite"),
]


def models_script(folder: Path) -> Config:
    config = alembic_config(folder)
    (folder / "env.py").write_text(ENV_PY, encoding="utf-8")
    # The template `alembic init` copies, so revision can write files.
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    shutil.copy(template, folder / "script.py.mako")
    return config


def settings(monkeypatch: pytest.MonkeyPatch, case: tuple[str, str]) -> None:
    """The environment `alembic revision` runs in, as an app's deployment sets it."""
    strategy, url = case
    monkeypatch.setenv("TENANCY_DATABASE_URL", url)
    monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", strategy)
    if strategy == "database":
        monkeypatch.setenv("TENANCY_DATABASE_URL_TEMPLATE", database_url_template(url))


def table_names(sync: Connection, schema: str | None) -> list[str]:
    return inspect(sync).get_table_names(schema=schema)


async def storage_names(url: str) -> list[str]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).get_schema_names())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("isolation_case", CASES, indirect=True)
async def test_autogenerate_writes_a_tenant_revision_that_then_migrates_the_tenants(
    isolation_case: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy, url = isolation_case
    script = models_script(tmp_path / "alembic")
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), tenant_tables="none")
    settings(monkeypatch, isolation_case)
    async with Tenancy(config) as tenancy:
        acme = await tenancy.create_tenant("acme")
        globex = await tenancy.create_tenant("globex")
        if strategy == "row":
            await upgrade(tenancy, script)  # autogenerate compares the central tables at head
        else:
            # A tenant behind the head is neither used nor touched.
            await upgrade(tenancy, script, identifiers=["globex"], revision=FIRST)

        command.revision(script, message="notes", autogenerate=True, rev_id="a1000000003")

        written = ScriptDirectory.from_config(script).get_revision("a1000000003")
        assert written is not None
        assert written.down_revision == SECOND
        source = Path(written.path).read_text(encoding="utf-8")  # noqa: ASYNC240
        assert "op.create_table('notes'" in source
        assert "op.drop_column('items', 'note')" in source
        assert "tenancy_" not in source  # the library's own tables are never offered
        if strategy == "row":
            assert "op.create_table('plans'" in source  # row isolation: shared tables too
        else:
            assert "plans" not in source  # a shared table is in no tenant revision
            assert await revision(config, acme) is None
            assert await revision(config, globex) == FIRST
            if not url.startswith("sqlite"):
                assert not [n for n in await storage_names(url) if n.startswith(SCRATCH_PREFIX)]

        report = await upgrade(tenancy, script)

        assert report.ok, report
        for tenant in (None,) if strategy == "row" else (acme, globex):
            assert await revision(config, tenant) == "a1000000003"
            async with tenant_tables(config, tenant) as (conn, schema):
                names = await conn.run_sync(table_names, schema)
            assert "notes" in names
            assert ("plans" in names) is (strategy == "row")


async def test_autogenerate_refuses_a_database_behind_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    script = models_script(tmp_path / "alembic")
    settings(monkeypatch, ("row", url))
    async with Tenancy(TenancyConfig(database_url=url)):
        pass
    with pytest.raises(Exception, match="not up to date"):
        command.revision(script, message="x", autogenerate=True)

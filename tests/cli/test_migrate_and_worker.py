"""``fastapi-tenancy migrate upgrade`` and ``worker`` through ``main``, as the console script
runs them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from sqlalchemy import MetaData

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.support.cli import NO_TABLES_SPEC, cli_environment, run_cli
from tests.support.migration_scripts import SECOND, alembic_config


def alembic_ini(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    config = alembic_config(folder)
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        f"[alembic]\nscript_location = {config.get_main_option('script_location')}\n",
        encoding="utf-8",
    )
    return ini


def test_migrate_upgrade_runs_once_then_skips(tmp_path: Path) -> None:
    ini = alembic_ini(tmp_path)
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}")
    first = run_cli("migrate", "upgrade", "--config", str(ini), "--json", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["upgraded"], report["skipped"], report["failed"]) == (1, 0, 0)
    again = run_cli("migrate", "upgrade", "--config", str(ini), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 upgraded, 1 skipped, 0 failed" in again.stdout


def test_migrate_refuses_malformed_tenants_and_needs_a_subcommand(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}")
    bad = run_cli("migrate", "upgrade", "--tenant", "Not Valid", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 2


def test_worker_provisions_pending_tenants_and_exits_when_idle(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}")
    result = run_cli("worker", "--exit-when-idle", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "provisioned=0 retried=0 failed=0"
    assert run_cli("worker", "--batch-size", "0", env=env, cwd=tmp_path).returncode == 2


def test_worker_migrates_a_tenant_before_activating_it(tmp_path: Path) -> None:
    ini = alembic_ini(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"

    async def create_pending() -> None:
        async with Tenancy(TenancyConfig(database_url=url, tenant_metadata=MetaData())) as tenancy:
            await tenancy.create_tenant("acme", provision=False)

    asyncio.run(create_pending())
    env = cli_environment(url, tenant_metadata=NO_TABLES_SPEC)

    result = run_cli("worker", "--exit-when-idle", "--migrate", str(ini), env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "provisioned=1 retried=0 failed=0"
    shown = run_cli("tenants", "show", "acme", "--json", env=env, cwd=tmp_path)
    assert json.loads(shown.stdout)["status"] == "active"
    with sqlite3.connect(tmp_path / "central.db") as db:
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        columns = [row[1] for row in db.execute("PRAGMA table_info(items)")]
    assert version == SECOND
    assert columns == ["id", "tenant_id", "name", "note"]

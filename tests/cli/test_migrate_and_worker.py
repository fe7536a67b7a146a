"""``fastapi-tenancy migrate upgrade`` and ``worker`` through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import cli_environment, run_cli
from tests.migrations.scripts import alembic_config


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

"""``fastapi-tenancy migrate upgrade|downgrade|status`` with ``-t``, ``--pending`` and real
Alembic, through ``main`` as the console script runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.backends import TEST_STORAGE_PREFIX
from tests.support.cli import NO_TABLES_SPEC, cli_environment, run_cli
from tests.support.migration_scripts import FIRST, SECOND, alembic_config

SCHEMA_CASES = [
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
]


def alembic_ini(tmp_path: Path) -> Path:
    config = alembic_config(tmp_path / "migrations")
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        f"[alembic]\nscript_location = {config.get_main_option('script_location')}\n",
        encoding="utf-8",
    )
    return ini


@pytest.mark.parametrize("isolation_case", SCHEMA_CASES, indirect=True)
def test_tenants_chosen_with_t_pending_and_downgrade(
    isolation_case: tuple[str, str], tmp_path: Path
) -> None:
    strategy, url = isolation_case
    ini = str(alembic_ini(tmp_path))
    env = cli_environment(
        url,
        isolation_strategy=strategy,
        tenant_metadata=NO_TABLES_SPEC,
        tenant_tables="none",
        schema_prefix=TEST_STORAGE_PREFIX,
    )

    def cli(*args: str) -> tuple[int, dict[str, object]]:
        result = run_cli(*args, "--config", ini, "--json", env=env, cwd=tmp_path)
        assert result.returncode in (0, 1), result.stderr
        return result.returncode, json.loads(result.stdout)

    def tenants(report: dict[str, object]) -> dict[str, tuple[str, str]]:
        rows = report["tenants"]
        assert isinstance(rows, list)
        return {
            row["tenant"]: (row.get("outcome") or row["state"], row.get("to") or row["revision"])
            for row in rows
        }

    for name in ("acme", "globex", "initech"):
        created = run_cli("tenants", "create", name, env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr

    code, report = cli(
        "migrate", "upgrade", "-t", "acme", "--tenant", "globex", "--revision", FIRST
    )
    assert code == 0
    assert tenants(report) == {"acme": ("upgraded", FIRST), "globex": ("upgraded", FIRST)}

    code, listed = cli("migrate", "status", "--pending")
    assert code == 1  # some tenant is behind
    assert tenants(listed) == {
        "acme": ("behind", FIRST),
        "globex": ("behind", FIRST),
        "initech": ("behind", "-"),
    }

    code, report = cli("migrate", "upgrade", "-t", "acme")
    assert (code, tenants(report)) == (0, {"acme": ("upgraded", SECOND)})

    # --pending leaves the tenants already at head out of the report.
    code, report = cli("migrate", "upgrade", "-t", "all", "--pending")
    assert code == 0
    assert tenants(report) == {"globex": ("upgraded", SECOND), "initech": ("upgraded", SECOND)}
    assert report["skipped"] == 1

    code, listed = cli("migrate", "status", "--pending")
    assert (code, tenants(listed), listed["pending"]) == (0, {}, 0)

    code, report = cli("migrate", "downgrade", FIRST, "-t", "globex")
    assert (code, tenants(report)) == (0, {"globex": ("downgraded", FIRST)})
    code, report = cli("migrate", "downgrade", "base", "-t", "all")
    assert code == 0
    assert {name: outcome for name, (outcome, _) in tenants(report).items()} == dict.fromkeys(
        ("acme", "globex", "initech"), "downgraded"
    )
    code, listed = cli("migrate", "status")
    assert set(tenants(listed).values()) == {("behind", "-")}


def test_downgrade_needs_tenants_named_and_t_refuses_malformed_ones(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'central.db'}")
    assert run_cli("migrate", "downgrade", "base", env=env, cwd=tmp_path).returncode == 2
    bad = run_cli("migrate", "upgrade", "-t", "Not Valid", env=env, cwd=tmp_path)
    assert bad.returncode == 2
    assert "not a tenant identifier" in bad.stderr


def test_row_isolation_downgrades_the_shared_tables_with_t_all(tmp_path: Path) -> None:
    ini = str(alembic_ini(tmp_path))
    env = cli_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=NO_TABLES_SPEC,
        tenant_tables="none",
    )
    up = run_cli("migrate", "upgrade", "--config", ini, env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    down = run_cli(
        "migrate", "downgrade", FIRST, "-t", "all", "--config", ini, env=env, cwd=tmp_path
    )
    assert down.returncode == 0, down.stderr
    assert "1 downgraded, 0 skipped, 0 failed" in down.stdout
    listed = run_cli("migrate", "status", "--config", ini, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"(shared tables)  {FIRST}" in listed.stdout

"""``fastapi-tenancy rls enable|check`` and the doctor's ``rls`` check, as real processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.cli.checks import check_row_level_security
from fastapi_tenancy.isolation.rls import POLICY_NAME, RlsProblem
from tests.support.cli import cli_environment, run_cli
from tests.support.rls import OWNER_ROLE, RlsDatabase, rls_database

ROOT = Path(__file__).resolve().parents[2]
METADATA = "tests.support.models:Base.metadata"


@pytest.fixture
async def database() -> AsyncIterator[RlsDatabase]:
    """The roles and the owner's tables, with no policies yet."""
    async with rls_database(policies=False) as database:
        yield database


def rls(tmp_path: Path, url: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = cli_environment(url, tenant_metadata=METADATA, **settings)
    env["PYTHONPATH"] = str(ROOT)  # so the command can import tests.support.models
    result = run_cli(*args, env=env, cwd=tmp_path)
    assert "Traceback" not in result.stderr
    return result


def check_json(tmp_path: Path, url: str) -> tuple[int, Any]:
    result = rls(tmp_path, url, "rls", "check", "--json", row_level_security="true")
    return result.returncode, json.loads(result.stdout)


@pytest.mark.postgres
async def test_enable_as_owner_then_check_as_app_role(
    database: RlsDatabase, tmp_path: Path
) -> None:
    code, report = check_json(tmp_path, database.app_url)
    assert code == 1
    assert report["tables"] == ["notes", "items"]
    assert [p["message"] for p in report["problems"]] == [
        f"table 'notes': row-level security is not enabled, row-level security is not forced, "
        f"policy {POLICY_NAME!r} is missing",
        f"table 'items': row-level security is not enabled, row-level security is not forced, "
        f"policy {POLICY_NAME!r} is missing",
    ]

    for _ in range(2):  # repeating it changes nothing
        enabled = rls(tmp_path, database.owner_url, "rls", "enable")
        assert enabled.returncode == 0, enabled.stderr
        assert "notes, items" in enabled.stdout

    code, report = check_json(tmp_path, database.app_url)
    assert (code, report["ok"], report["problems"]) == (0, True, [])
    text_report = rls(tmp_path, database.app_url, "rls", "check", row_level_security="true")
    assert text_report.returncode == 0
    assert text_report.stdout.startswith("ok ")


@pytest.mark.postgres
async def test_check_fails_for_the_owner_and_a_superuser(
    database: RlsDatabase, tmp_path: Path
) -> None:
    assert rls(tmp_path, database.owner_url, "rls", "enable").returncode == 0
    code, report = check_json(tmp_path, database.owner_url)
    assert code == 1
    assert f"role {OWNER_ROLE!r} owns table 'notes'" in report["problems"][0]["message"]
    result = rls(tmp_path, database.superuser_url, "rls", "check", row_level_security="true")
    assert result.returncode == 1
    assert result.stdout.startswith("fail  the app connects as 'postgres', a superuser")
    assert "(fix: connect the app (TENANCY_DATABASE_URL) as its own role" in result.stdout


@pytest.mark.postgres
async def test_check_fails_while_the_app_does_not_bind_tenants(
    database: RlsDatabase, tmp_path: Path
) -> None:
    assert rls(tmp_path, database.owner_url, "rls", "enable").returncode == 0
    result = rls(tmp_path, database.app_url, "rls", "check")
    assert result.returncode == 1
    assert "TENANCY_ROW_LEVEL_SECURITY is off" in result.stdout
    assert "set TENANCY_ROW_LEVEL_SECURITY=true" in result.stdout


@pytest.mark.postgres
async def test_doctor_reports_the_rls_check(database: RlsDatabase, tmp_path: Path) -> None:
    assert rls(tmp_path, database.owner_url, "rls", "enable").returncode == 0

    def doctor(url: str) -> tuple[int, dict[str, Any]]:
        result = rls(tmp_path, url, "doctor", "--json", row_level_security="true")
        checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
        return result.returncode, checks["rls"]

    code, check = doctor(database.app_url)
    assert (code, check["status"]) == (0, "ok")
    code, check = doctor(database.superuser_url)
    assert (code, check["status"]) == (1, "fail")
    assert "a superuser" in check["message"]
    assert "CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS" in check["hint"]


def test_enable_sql_prints_the_ddl_without_connecting(tmp_path: Path) -> None:
    # Nothing listens on port 9: printing the DDL must not need the server.
    result = rls(tmp_path, "postgresql+asyncpg://owner@127.0.0.1:9/app", "rls", "enable", "--sql")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;"
    assert f'CREATE POLICY "{POLICY_NAME}" ON items' in lines[-1]
    assert len(lines) == 8


@pytest.mark.parametrize(
    ("url", "settings", "complaint"),
    [
        ("sqlite+aiosqlite:///x.db", {}, "row-level security needs PostgreSQL"),
        (
            "postgresql+asyncpg://owner@127.0.0.1:9/app",
            {"isolation_strategy": "schema"},
            "applies to isolation_strategy 'row'",
        ),
        (
            "postgresql+asyncpg://owner@127.0.0.1:9/app",
            {"tenant_metadata": ""},
            "set TENANCY_TENANT_METADATA",
        ),
    ],
)
def test_rls_commands_refuse_configs_they_cannot_serve(
    tmp_path: Path, url: str, settings: dict[str, str], complaint: str
) -> None:
    env = cli_environment(url, **({"tenant_metadata": METADATA} | settings))
    if not env["TENANCY_TENANT_METADATA"]:
        del env["TENANCY_TENANT_METADATA"]
    env["PYTHONPATH"] = str(ROOT)
    for command in (["rls", "enable"], ["rls", "check"]):
        result = run_cli(*command, env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert complaint in result.stderr
        assert "Traceback" not in result.stderr


def test_rls_without_a_subcommand_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("rls", env=cli_environment("sqlite+aiosqlite:///x.db"), cwd=tmp_path)
    assert result.returncode == 2
    assert "enable" in result.stderr


def test_doctor_rls_check_on_its_own() -> None:
    off = TenancyConfig()
    on = TenancyConfig(database_url="postgresql+asyncpg://app@db/app", row_level_security=True)
    assert check_row_level_security(off, None).status == "ok"
    assert check_row_level_security(on, None).status == "warn"
    assert check_row_level_security(on, ()).status == "ok"
    problems = (RlsProblem("a", "fix it"), RlsProblem("b", "fix it"), RlsProblem("c", "other"))
    failed = check_row_level_security(on, problems)
    assert (failed.status, failed.message, failed.hint) == ("fail", "a; b; c", "fix it; other")

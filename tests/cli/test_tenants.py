"""``fastapi-tenancy tenants`` against SQLite files and PostgreSQL, in process through ``main``
(the installed script runs once, for its usage exit code)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import cli_environment, run_cli, run_console_script
from tests.support.services import POSTGRES_URL, require_server, reset_database


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}")


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The working directory holds no .env file, so only ``env`` configures the command.
    return run_cli(*args, env=env, cwd=cwd)


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    # One error line, after argparse's usage line for usage errors.
    assert result.stderr.splitlines()[-1].startswith("fastapi-tenancy")


def test_no_arguments_prints_help_and_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    result = run_console_script(env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: fastapi-tenancy" in result.stderr
    assert "tenants" in result.stderr
    assert "doctor" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["tenants"],
        ["tenants", "create"],
        ["tenants", "list"],
        ["tenants", "show"],
        ["tenants", "suspend"],
        ["tenants", "activate"],
        ["tenants", "delete"],
        ["tenants", "restore"],
        ["tenants", "purge"],
        ["doctor"],
    ],
    ids=lambda command: "-".join(command) or "top",
)
def test_help_works_for_every_command(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    result = cli(env, tmp_path, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: fastapi-tenancy {' '.join(command)}".rstrip())
    assert "--database-url" in result.stdout


def test_tenants_are_created_listed_and_shown_without_their_database_url(
    env: dict[str, str], tmp_path: Path
) -> None:
    created = cli(
        env, tmp_path, "tenants", "create", "acme", "--name", "Acme Inc.",
        "--metadata", '{"plan": "pro"}',
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "acme" in created.stdout
    assert cli(env, tmp_path, "tenants", "create", "globex").returncode == 0

    table = cli(env, tmp_path, "tenants", "list").stdout.splitlines()
    assert table[0].split() == ["IDENTIFIER", "NAME", "STATUS", "STORAGE", "CREATED"]
    assert [line.split()[0] for line in table[1:]] == ["acme", "globex"]
    assert "Acme Inc." in table[1]

    shown = json.loads(cli(env, tmp_path, "tenants", "show", "acme", "--json").stdout)
    assert shown["identifier"] == "acme"
    assert shown["name"] == "Acme Inc."
    assert shown["status"] == "active"
    assert shown["metadata"] == {"plan": "pro"}
    assert "database_url" not in shown


def test_deleted_tenants_are_listed_only_with_all(env: dict[str, str], tmp_path: Path) -> None:
    cli(env, tmp_path, "tenants", "create", "acme")
    assert cli(env, tmp_path, "tenants", "delete", "acme").returncode == 0

    assert json.loads(cli(env, tmp_path, "tenants", "list", "--json").stdout) == []
    listed = json.loads(cli(env, tmp_path, "tenants", "list", "--all", "--json").stdout)
    assert [(tenant["identifier"], tenant["status"]) for tenant in listed] == [("acme", "deleted")]


def test_unknown_tenant_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(env, tmp_path, "tenants", "show", "nobody")
    assert_clean_failure(result, 1)
    assert "nobody" in result.stderr


def test_illegal_transition_exits_1_with_its_reason(env: dict[str, str], tmp_path: Path) -> None:
    cli(env, tmp_path, "tenants", "create", "acme")
    cli(env, tmp_path, "tenants", "suspend", "acme")
    result = cli(env, tmp_path, "tenants", "restore", "acme")
    assert_clean_failure(result, 1)
    assert "cannot restore tenant 'acme': it is suspended" in result.stderr


def test_duplicate_tenant_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    cli(env, tmp_path, "tenants", "create", "acme")
    result = cli(env, tmp_path, "tenants", "create", "acme")
    assert_clean_failure(result, 1)
    assert "tenant 'acme' already exists" in result.stderr


def test_malformed_identifier_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(env, tmp_path, "tenants", "create", "Not_A_Label")
    assert_clean_failure(result, 2)
    assert "is not a tenant identifier" in result.stderr


def test_malformed_metadata_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(env, tmp_path, "tenants", "create", "acme", "--metadata", "[1, 2]")
    assert_clean_failure(result, 2)
    assert "JSON object" in result.stderr


def test_purge_refuses_without_yes_and_keeps_the_tenant(
    env: dict[str, str], tmp_path: Path
) -> None:
    cli(env, tmp_path, "tenants", "create", "acme")
    cli(env, tmp_path, "tenants", "delete", "acme")

    refused = cli(env, tmp_path, "tenants", "purge", "acme")
    assert_clean_failure(refused, 2)
    assert "--yes" in refused.stderr
    assert (
        json.loads(cli(env, tmp_path, "tenants", "show", "acme", "--json").stdout)["status"]
        == "deleted"
    )


def test_unreachable_database_exits_3_without_its_password(tmp_path: Path) -> None:
    env = cli_environment("postgresql+asyncpg://app:s3cret-pass@127.0.0.1:1/app")
    result = cli(env, tmp_path, "tenants", "list")
    assert_clean_failure(result, 3)
    assert "127.0.0.1:1" in result.stderr
    assert "s3cret-pass" not in result.stderr + result.stdout


def test_database_url_option_overrides_the_environment(env: dict[str, str], tmp_path: Path) -> None:
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    cli(env, tmp_path, "--database-url", other, "tenants", "create", "acme")

    assert json.loads(cli(env, tmp_path, "tenants", "list", "--json").stdout) == []
    in_other = cli(env, tmp_path, "tenants", "list", "--json", "--database-url", other)
    assert [tenant["identifier"] for tenant in json.loads(in_other.stdout)] == ["acme"]


def test_unreachable_tenant_database_hides_its_password(tmp_path: Path) -> None:
    env = cli_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        isolation_strategy="database",
        database_url_template=f"sqlite+aiosqlite:///{tmp_path}/{{database}}.db",
    )
    result = cli(
        env, tmp_path, "tenants", "create", "acme",
        "--tenant-database-url", "postgresql+asyncpg://app:t3nant-pass@127.0.0.1:1/acme",
    )  # fmt: skip
    assert_clean_failure(result, 3)
    assert "t3nant-pass" not in result.stderr + result.stdout


def test_invalid_configuration_exits_1_without_a_traceback(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}", database_pool_size="0")
    result = cli(env, tmp_path, "tenants", "list")
    assert_clean_failure(result, 1)
    assert "TENANCY_DATABASE_POOL_SIZE" in result.stderr


@pytest.mark.postgres
async def test_full_lifecycle_on_postgresql(tmp_path: Path) -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    env = cli_environment(POSTGRES_URL)
    try:
        steps = [
            (["create", "acme", "--name", "Acme"], "active"),
            (["suspend", "acme"], "suspended"),
            (["activate", "acme"], "active"),
            (["delete", "acme"], "deleted"),
            (["restore", "acme"], "active"),
            (["delete", "acme"], "deleted"),
        ]
        for args, status in steps:
            result = cli(env, tmp_path, "tenants", *args)
            assert result.returncode == 0, (args, result.stderr)
            assert f"({status})" in result.stdout
            if args[0] == "create":
                listed = json.loads(cli(env, tmp_path, "tenants", "list", "--json").stdout)
                assert [tenant["identifier"] for tenant in listed] == ["acme"]

        purged = cli(env, tmp_path, "tenants", "purge", "acme", "--yes")
        assert purged.returncode == 0, purged.stderr
        assert json.loads(cli(env, tmp_path, "tenants", "list", "--all", "--json").stdout) == []
    finally:
        await reset_database(POSTGRES_URL)

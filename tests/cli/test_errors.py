"""Every command's error paths: one line on stderr, a non-zero exit code, never a traceback.

The commands run in process through `fastapi_tenancy.cli.main` (the console script is only that
function); `test_a_real_process_fails_in_one_line` and
`test_the_working_directory_is_importable_like_python_m` run the installed script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from fastapi_tenancy.cli import build_parser, main
from tests.support.cli import cli_environment, run_console_script


def leaf_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Every runnable command of the CLI, as the words that name it."""
    groups = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not groups:
        return [path]
    return [
        leaf
        for name, child in groups[0].choices.items()
        for leaf in leaf_commands(child, (*path, name))
    ]


def command_parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = group.choices[name]
    return parser


def runnable(path: tuple[str, ...]) -> list[str]:
    """``path`` with the arguments it requires, so that it gets as far as loading the config."""
    argv = list(path)
    for action in command_parser(path)._actions:
        if not action.option_strings and action.dest == "identifier":
            argv.append("acme")
        if not action.option_strings and action.dest == "host":
            argv.append("acme.example.com")
    if path[-1] == "purge":
        argv.append("--yes")
    if path[-1] == "update":
        argv += ["--name", "Acme"]
    if path[-1] == "backup":
        argv += ["-o", "acme.tar.gz"]
    if path[-1] == "move":
        argv += ["--to-strategy", "schema"]
    if path == ("migrate", "downgrade"):
        argv += ["base", "-t", "all"]
    if path[0] == "migrate" and path[-1] in ("upgrade", "downgrade", "status"):
        argv += ["--config", str(EXAMPLE_ALEMBIC_INI)]
    return argv


EXAMPLE_ALEMBIC_INI = Path(__file__).resolve().parents[2] / "examples" / "saas" / "alembic.ini"
COMMANDS = leaf_commands(build_parser())
# Commands that never read the settings: their broken input is something else.
CONFIG_FREE = {("config", "reference")}


def assert_one_error_line(capsys: pytest.CaptureFixture[str], *, contains: str) -> None:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fastapi-tenancy"), lines
    assert ": error: " in lines[0]
    assert contains in lines[0]


def test_the_table_covers_every_command() -> None:
    assert ("tenants", "create") in COMMANDS
    assert ("migrate", "upgrade") in COMMANDS
    assert ("doctor",) in COMMANDS
    assert len(COMMANDS) >= 14


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: "-".join(path))
def test_a_broken_setting_fails_every_command_in_one_line(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_POOL_SIZE", "0")
    if path in CONFIG_FREE:
        assert main([*runnable(path), "--write", "/nonexistent/page.md"]) == 1
        assert_one_error_line(capsys, contains="cannot update /nonexistent/page.md")
        return
    code = main(runnable(path))
    if path == ("doctor",):
        # The doctor's report is its output: the broken setting is its failing check.
        assert code == 1
        captured = capsys.readouterr()
        assert captured.err == ""
        assert "fail  config    invalid configuration: TENANCY_DATABASE_POOL_SIZE" in captured.out
        return
    assert code == 1
    assert_one_error_line(capsys, contains="invalid configuration: TENANCY_DATABASE_POOL_SIZE:")


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: "-".join(path))
def test_an_unknown_option_is_a_one_line_usage_error(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*runnable(path), "--no-such-option"]) == 2
    assert_one_error_line(capsys, contains="unrecognized arguments: --no-such-option")


@pytest.mark.parametrize(
    "path",
    [path for path in COMMANDS if "acme" in runnable(path)],
    ids=lambda path: "-".join(path),
)
def test_a_malformed_identifier_is_a_one_line_usage_error(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [word if word != "acme" else "Not_An_Identifier" for word in runnable(path)]
    assert main(argv) == 2
    assert_one_error_line(capsys, contains="'Not_An_Identifier' is not a tenant identifier")


@pytest.mark.parametrize("option", [[], ["--config", "missing/alembic.ini"]])
def test_migrate_without_an_alembic_config_says_which_file(
    option: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    assert main(["migrate", "upgrade", *option]) == 1
    path = option[1] if option else "alembic.ini"
    assert_one_error_line(capsys, contains=f"no Alembic config file at {path}: pass --config")
    assert not (tmp_path / "t.db").exists()  # nothing was opened or created


def test_an_alembic_config_without_script_location_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alembic.ini").write_text("[alembic]\nsqlalchemy.url = x\n")
    assert main(["migrate", "upgrade"]) == 1
    assert_one_error_line(capsys, contains="alembic.ini has no script_location")


def test_the_worker_checks_its_alembic_config_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    assert main(["worker", "--exit-when-idle", "--migrate", "nope.ini"]) == 1
    assert_one_error_line(capsys, contains="no Alembic config file at nope.ini: pass --migrate")
    assert not (tmp_path / "t.db").exists()


def test_a_real_process_fails_in_one_line(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", isolation_strategy="rows")
    result = run_console_script("tenants", "list", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "fastapi-tenancy: error: invalid configuration: TENANCY_ISOLATION_STRATEGY: Input should "
        "be 'row', 'schema' or 'database'"
    ]


# Tenants that would get no tables.


def test_creating_a_tenant_without_known_tables_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    monkeypatch.setenv("TENANCY_TENANT_METADATA", "tests.cli.test_errors:EMPTY")
    assert main(["tenants", "create", "acme"]) == 1
    assert_one_error_line(
        capsys,
        contains="cannot create tenant 'acme': it would get no tables: TENANCY_TENANT_METADATA "
        "'tests.cli.test_errors:EMPTY' holds no table; set TENANCY_TENANT_METADATA to your "
        "models' metadata",
    )
    assert main(["tenants", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing was recorded


def test_creating_a_tenant_with_no_metadata_and_no_models_is_refused(tmp_path: Path) -> None:
    # A real process: this one has imported the test models, which would count as tables.
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    del env["TENANCY_TENANT_METADATA"]
    result = run_console_script("tenants", "create", "acme", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "fastapi-tenancy: error: cannot create tenant 'acme': it would get no tables: "
        "TENANCY_TENANT_METADATA is not set and no TenantScoped model is imported"
    )
    with contextlib.closing(sqlite3.connect(tmp_path / "t.db")) as db:
        assert db.execute("SELECT count(*) FROM tenancy_tenants").fetchone() == (0,)


def test_metadata_that_cannot_be_imported_mentions_pythonpath(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    monkeypatch.setenv("TENANCY_TENANT_METADATA", "myapp.models:Base.metadata")
    assert main(["tenants", "create", "acme"]) == 1
    assert_one_error_line(
        capsys,
        contains="No module named 'myapp'; it is imported from the working directory and "
        "PYTHONPATH, so run from your project's root or add it to PYTHONPATH",
    )


def test_the_working_directory_is_importable_like_python_m(tmp_path: Path) -> None:
    (tmp_path / "cwdmodels.py").write_text(
        "from sqlalchemy import Column, Integer, MetaData, String, Table\n"
        "metadata = MetaData()\n"
        "Table('things', metadata, Column('id', Integer, primary_key=True),"
        " Column('tenant_id', String(64)))\n"
    )
    env = cli_environment(
        f"sqlite+aiosqlite:///{tmp_path / 't.db'}", tenant_metadata="cwdmodels:metadata"
    )
    # A console script's sys.path starts at its own folder, not the working directory.
    result = run_console_script("tenants", "create", "acme", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "created tenant acme (active)\n"


def test_alembic_owned_tables_are_an_explicit_opt_out_with_a_reminder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    monkeypatch.setenv("TENANCY_TENANT_METADATA", "tests.cli.test_errors:EMPTY")
    monkeypatch.setenv("TENANCY_TENANT_TABLES", "none")
    assert main(["tenants", "create", "acme"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "created tenant acme (active)",
        "no tables were created (TENANCY_TENANT_TABLES=none); if Alembic owns them, run "
        "fastapi-tenancy migrate upgrade --tenant acme",
    ]


def test_the_worker_refuses_to_activate_tenants_without_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    monkeypatch.setenv("TENANCY_TENANT_METADATA", "tests.cli.test_errors:EMPTY")
    assert main(["worker", "--exit-when-idle"]) == 1
    assert_one_error_line(capsys, contains="cannot provision tenants: it would get no tables")
    monkeypatch.setenv("TENANCY_TENANT_TABLES", "none")  # the explicit opt-out
    assert main(["worker", "--exit-when-idle"]) == 0
    assert capsys.readouterr().out == "provisioned=0 retried=0 failed=0\n"


EMPTY = MetaData()

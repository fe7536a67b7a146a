"""``fastapi-tenancy config reference``: the settings reference, printed or written into a page."""

from __future__ import annotations

from pathlib import Path

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.config_reference import MARKER
from tests.support.cli import cli_environment, run_cli


def test_reference_lists_every_setting_with_its_env_var(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}")
    result = run_cli("config", "reference", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for name in TenancyConfig.model_fields:
        assert f"| `{name}` | `TENANCY_{name.upper()}` |" in result.stdout, name
    assert "| `cache_ttl` | `TENANCY_CACHE_TTL` | `60.0` |" in result.stdout


def test_write_replaces_only_what_follows_the_marker(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(f"# Settings\n\nHand-written intro.\n\n{MARKER}\n\nstale tables\n")
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}")

    result = run_cli("config", "reference", "--write", str(page), env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.startswith(f"# Settings\n\nHand-written intro.\n\n{MARKER}\n\n## Central database")
    assert "stale tables" not in text


def test_write_refuses_a_page_without_the_marker(tmp_path: Path) -> None:
    page = tmp_path / "notes.md"
    page.write_text("# Notes\n")
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}")

    result = run_cli("config", "reference", "--write", str(page), env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "marker" in result.stderr
    assert page.read_text() == "# Notes\n"

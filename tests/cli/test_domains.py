"""``fastapi-tenancy tenants domains``: the real console script against an SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli import cli_environment, run_cli


def test_domains_are_added_listed_and_removed_from_the_command_line(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}", tenant_tables="none")

    def cli(*args: str) -> tuple[int, str, str]:
        result = run_cli(*args, env=env, cwd=tmp_path)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stdout, result.stderr

    assert cli("tenants", "create", "acme")[0] == 0
    assert cli("tenants", "create", "globex")[0] == 0

    assert cli("tenants", "domains", "add", "acme", "Shop.ACME.com.:443") == (
        0,
        "added domain shop.acme.com to tenant acme\n",
        "",
    )
    code, _, error = cli("tenants", "domains", "add", "globex", "shop.acme.com")
    assert (code, error.strip()) == (
        1,
        "fastapi-tenancy: error: domain 'shop.acme.com' already belongs to a tenant",
    )
    code, _, error = cli("tenants", "domains", "add", "acme", "10.0.0.1")
    assert code == 2
    assert "is an IP address" in error

    code, out, _ = cli("tenants", "domains", "list", "--json")
    assert code == 0
    assert [(r["host"], r["tenant"]) for r in json.loads(out)] == [("shop.acme.com", "acme")]
    code, out, _ = cli("tenants", "domains", "list", "globex")
    assert out.splitlines() == ["HOST  TENANT  CREATED"]

    code, _, error = cli("tenants", "domains", "remove", "shop.acme.com", "--tenant", "globex")
    assert code == 1
    assert "does not belong to tenant 'globex'" in error
    assert cli("tenants", "domains", "remove", "shop.acme.com")[:2] == (
        0,
        "removed domain shop.acme.com\n",
    )
    assert json.loads(cli("tenants", "domains", "list", "--json")[1]) == []

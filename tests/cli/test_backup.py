"""``fastapi-tenancy tenants backup`` / ``tenants restore -i``: the command line round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import cli_environment, run_cli
from tests.support.services import POSTGRES_URL, TEST_STORAGE_PREFIX, require_server, reset_database


@pytest.mark.postgres
async def test_a_tenant_is_backed_up_and_restored_from_the_command_line(tmp_path: Path) -> None:
    require_server("PostgreSQL", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    env = cli_environment(
        POSTGRES_URL, isolation_strategy="schema", schema_prefix=TEST_STORAGE_PREFIX
    )

    def cli(*args: str) -> tuple[int, str, str]:
        result = run_cli(*args, env=env, cwd=tmp_path)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stdout, result.stderr

    try:
        assert cli("tenants", "create", "acme")[0] == 0
        backup = tmp_path / "acme.tar.gz"
        # Without the PostgreSQL client on PATH: one line saying what to install, no file.
        empty = tmp_path / "bin"
        empty.mkdir()
        result = run_cli(
            "tenants",
            "backup",
            "acme",
            "-o",
            str(backup),
            env=env | {"PATH": str(empty)},
            cwd=tmp_path,
        )
        assert (result.returncode, result.stderr.strip()) == (
            1,
            "fastapi-tenancy: error: pg_dump is not on PATH: install the PostgreSQL client "
            "(apt install postgresql-client) to back up or move tenants",
        )
        assert not backup.exists()
        code, out, _ = cli("tenants", "backup", "acme", "-o", str(backup))
        assert code == 0
        # items and notes; the shared plans table lives once, outside the tenant's schema.
        assert out == f"backed up tenant acme to {backup} (postgres-sql, 2 tables, 0 rows)\n"
        # The same command still brings back soft-deleted tenants; -i restores from a file.
        code, _, error = cli("tenants", "restore", "acme", "-i", str(backup))
        assert (code, error.strip()) == (
            1,
            "fastapi-tenancy: error: tenant 'acme' already exists: purge it first, or restore "
            "with --as <new-identifier>",
        )
        code, out, _ = cli("tenants", "restore", "acme", "-i", str(backup), "--as", "acme-copy")
        assert (code, out) == (0, f"restored tenant acme-copy (active) from {backup}\n")
        assert cli("tenants", "delete", "acme")[0] == 0
        assert cli("tenants", "restore", "acme")[1] == "restored tenant acme (active)\n"
        code, _, error = cli("tenants", "restore", "acme", "--as", "other")
        assert (code, error.strip()) == (
            2,
            "fastapi-tenancy: error: tenants restore: --as needs -i FILE",
        )
    finally:
        await reset_database(POSTGRES_URL)

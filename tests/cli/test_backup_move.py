"""``fastapi-tenancy tenants move``: a tenant changes strategy from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import cli_environment, run_cli
from tests.support.services import POSTGRES_URL, TEST_STORAGE_PREFIX, require_server, reset_database


@pytest.mark.postgres
async def test_a_tenant_moves_to_its_own_schema_from_the_command_line(tmp_path: Path) -> None:
    require_server("PostgreSQL", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    env = cli_environment(POSTGRES_URL, isolation_strategy="row", schema_prefix=TEST_STORAGE_PREFIX)

    def cli(*args: str) -> tuple[int, str, str]:
        result = run_cli(*args, env=env, cwd=tmp_path)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stdout, result.stderr

    try:
        assert cli("tenants", "create", "acme")[0] == 0
        code, _, error = cli("tenants", "move", "acme", "--to", "pg9")
        assert (code, error.strip()) == (
            1,
            "fastapi-tenancy: error: row isolation keeps every tenant in the central database",
        )
        code, out, _ = cli("tenants", "move", "acme", "--to-strategy", "schema")
        assert code == 0
        assert out.splitlines() == [
            "acme: frozen: the tenant's requests get 503 with Retry-After",
            "acme: fenced: the source refuses writes",
            "acme: copied and verified 0 rows in 2 tables",
            "acme: switched: the tenant is served from schema isolation",
            "moved tenant acme to schema isolation (active)",
        ]
        code, _, error = cli("tenants", "move", "acme", "--to-strategy", "schema")
        assert code == 1
        assert "was moved to schema isolation already" in error
        code, out, _ = cli("tenants", "move", "acme", "--to-strategy", "schema", "--drop-source")
        assert (code, out.splitlines()[-1]) == (0, "moved tenant acme to schema isolation (active)")
        code, _, error = cli("tenants", "move", "acme", "--to-strategy", "schema", "--rollback")
        assert (code, error.strip()) == (
            1,
            "fastapi-tenancy: error: tenant 'acme' has no move under way",
        )
    finally:
        await reset_database(POSTGRES_URL)

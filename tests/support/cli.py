"""Run the installed ``fastapi-tenancy`` console script the way a user does: as a process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import MetaData

REPOSITORY = Path(__file__).resolve().parents[2]
TEST_METADATA = "tests.support.models:Base.metadata"
# For tenants whose tables Alembic creates: provisioning makes the storage only.
NO_TABLES = MetaData()
NO_TABLES_SPEC = "tests.support.cli:NO_TABLES"
# The script pip installed next to this interpreter, so the tests exercise the real entry point.
CLI = shutil.which("fastapi-tenancy", path=str(Path(sys.executable).parent))


def cli_environment(database_url: str, **settings: str) -> dict[str, str]:
    """The test process's environment without its TENANCY_* settings, plus ``settings``.

    ``TENANCY_TENANT_METADATA`` names the test models, as an app's environment names its own.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("TENANCY_") and not name.startswith("TENANCY_TEST_"))
        and name != "WEB_CONCURRENCY"
    }
    env["TENANCY_DATABASE_URL"] = database_url
    # The tables tenants get, as an app's environment names them (importable from the repository).
    env["TENANCY_TENANT_METADATA"] = TEST_METADATA
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    env.update({f"TENANCY_{name.upper()}": value for name, value in settings.items()})
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    assert CLI is not None, f"fastapi-tenancy is not installed next to {sys.executable}"
    return subprocess.run(
        [CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )

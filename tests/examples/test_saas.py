"""The SaaS example runs as its README says, against real PostgreSQL and Redis.

Sign-up through the API (pending), the example's worker as a process (schema + Alembic), a third
tenant through the CLI and ``migrate upgrade``, then JWT requests for each tenant.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values
from examples.saas.app import create_app
from examples.saas.settings import ALEMBIC_INI, SAAS_ENV, tenancy_config
from redis.asyncio import Redis
from sqlalchemy import text

from fastapi_tenancy.testing import AppHarness, run_app
from tests.support.cli import cli_environment, run_cli
from tests.support.services import REDIS_URL, require_server

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).parent.parent.parent
HEAD = "v2_project_done"


@pytest.fixture
def saas_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the README sets, for this process and the example's subprocesses."""
    require_server("redis", REDIS_URL, 6379)
    settings = {
        "TENANCY_DATABASE_URL": database_url,
        "TENANCY_JWT_SECRET": secrets.token_urlsafe(48),
        "TENANCY_REDIS_URL": REDIS_URL,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    from_file = {name: value or "" for name, value in dotenv_values(SAAS_ENV).items()}
    return {**cli_environment(database_url), **from_file, **settings, "PYTHONPATH": str(ROOT)}


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.saas.worker", "--exit-when-idle"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def tenant_revision(harness: AppHarness, identifier: str) -> str | None:
    tenant = await harness.tenancy.get_tenant(identifier)
    assert tenant is not None
    async with harness.tenancy.engine.connect() as conn:
        revision: str | None = await conn.scalar(
            text(f'SELECT version_num FROM "{tenant.storage_name}".alembic_version')
        )
        return revision


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_saas_example_signs_up_provisions_migrates_and_isolates_tenants(
    saas_env: dict[str, str], tmp_path: Path
) -> None:
    async with run_app(create_app(tenancy_config())) as harness:
        async with harness.client() as anonymous:
            for identifier in ("acme", "globex"):
                signup = {"identifier": identifier, "name": identifier.title()}
                response = await anonymous.post("/signup", json=signup)
                assert response.status_code == 202, response.text
                assert response.json()["status"] == "pending"
            assert (await anonymous.post("/signup", json=signup)).status_code == 409
            assert (await anonymous.get("/health/ready")).status_code == 200
        async with harness.client("acme") as acme:
            assert (await acme.get("/projects")).status_code == 404  # not provisioned yet

        worker = run_worker(saas_env)
        assert worker.returncode == 0, worker.stderr
        assert worker.stdout.strip().endswith("provisioned=2 retried=0 failed=0")
        assert await tenant_revision(harness, "acme") == HEAD

        created = run_cli("tenants", "create", "initech", env=saas_env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        migrate = run_cli(
            "migrate", "upgrade", "--config", str(ALEMBIC_INI), env=saas_env, cwd=tmp_path
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert "1 upgraded, 2 skipped, 0 failed" in migrate.stdout
        assert await tenant_revision(harness, "initech") == HEAD

        async with (
            harness.client("acme") as acme,
            harness.client("globex") as globex,
            harness.client("initech") as initech,
        ):
            made = await acme.post("/projects", json={"name": "rocket"})
            assert made.status_code == 201, made.text
            assert made.json()["done"] is False
            assert made.headers["RateLimit-Limit"] == "600"
            assert [p["name"] for p in (await acme.get("/projects")).json()] == ["rocket"]
            assert (await globex.get("/projects")).json() == []
            assert (await initech.get("/projects")).json() == []
            assert (await acme.get("/me")).json() == {"tenant": "acme", "name": "Acme"}
        async with harness.client(headers={"Authorization": "Bearer not-a-token"}) as forged:
            assert (await forged.get("/projects")).status_code == 401

    redis = Redis.from_url(REDIS_URL)
    try:
        assert [key async for key in redis.scan_iter("LIMITS:*")], "rate limits are not in Redis"
    finally:
        await redis.aclose()


def test_saas_example_files_are_where_the_readme_says() -> None:
    readme = (ROOT / "examples" / "saas" / "README.md").read_text(encoding="utf-8")
    for command in (
        "python -m examples.saas.worker",
        "fastapi-tenancy migrate upgrade --config examples/saas/alembic.ini",
        "uvicorn --factory examples.saas.app:create_app",
        "python -m examples.saas.issue_token",
    ):
        assert command in readme, command
    assert os.path.exists(ALEMBIC_INI)

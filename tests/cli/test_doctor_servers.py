"""``fastapi-tenancy doctor`` connects to every configured server and catches what start cannot.

Run in process through `fastapi_tenancy.cli.main`; the console script is that function.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.cli import main
from tests.support.services import POSTGRES_URL, REDIS_URL, require_server, reset_database
from tests.test_jwks import JWKSServer

UNREACHABLE_REDIS = "redis://:hunter2@127.0.0.1:1/0"


def doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    return code, {check["name"]: check for check in report["checks"]}


@pytest.fixture(autouse=True)
def _sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file but the test's own
    monkeypatch.setenv("TENANCY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 't.db'}")


def test_a_misspelt_variable_fails_the_doctor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_ISOLATON_STRATEGY", "schema")
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["settings"]["status"] == "fail"
    assert "did you mean TENANCY_ISOLATION_STRATEGY?" in checks["settings"]["message"]


def test_the_suites_own_variables_are_no_typo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_TEST_SOMETHING", "1")
    monkeypatch.setenv("TENANCY_SOAK_SECONDS", "1")
    code, checks = doctor(capsys)
    assert code == 0
    assert checks["settings"]["status"] == "ok"


def test_a_placeholder_jwt_secret_is_not_reported_while_jwt_is_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_JWT_SECRET", "change-me")
    code, checks = doctor(capsys)
    assert code == 0
    assert all(check["status"] == "ok" for check in checks.values()), checks


def test_the_database_latency_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys)
    assert code == 0
    assert checks["database"]["message"].startswith("central database answers in ")
    assert checks["database"]["message"].endswith(" ms")


def test_an_unreachable_redis_fails_the_doctor_and_says_requests_would_503(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_REDIS_URL", UNREACHABLE_REDIS)
    monkeypatch.setenv("TENANCY_ENABLE_RATE_LIMITING", "true")
    code, checks = doctor(capsys)
    assert code == 1
    redis = checks["redis-up"]
    assert redis["status"] == "fail"
    assert "127.0.0.1:1" in redis["message"]
    assert "every tenant request answers 503" in redis["message"]
    assert "hunter2" not in json.dumps(checks)


@pytest.mark.redis
def test_a_reachable_redis_is_reported_with_its_latency(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_server("redis", REDIS_URL, 6379)
    monkeypatch.setenv("TENANCY_REDIS_URL", REDIS_URL)
    code, checks = doctor(capsys)
    assert code == 0, checks
    assert checks["redis-up"]["message"].startswith("Redis answers PING in ")


def jwks_settings(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TENANCY_RESOLUTION_STRATEGY", "jwt")
    monkeypatch.setenv("TENANCY_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("TENANCY_JWT_JWKS_URL", url)


def test_a_reachable_jwks_is_fetched_with_its_latency(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with JWKSServer() as server:
        jwks_settings(monkeypatch, server.url)
        code, checks = doctor(capsys)
        assert server.fetches == 1
    assert code == 0, checks
    assert checks["jwks"]["message"].startswith(f"the JWKS at {server.url} answers in ")


def test_an_unreachable_jwks_fails_the_doctor(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks_settings(monkeypatch, "http://127.0.0.1:1/jwks.json")
    code, checks = doctor(capsys)
    assert code == 1
    assert checks["jwks"]["status"] == "fail"
    assert "could not fetch the JWKS from http://127.0.0.1:1/jwks.json" in checks["jwks"]["message"]


@pytest.mark.postgres
async def test_switching_from_row_to_schema_fails_the_doctor_with_the_steps(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    try:
        async with Tenancy(TenancyConfig(database_url=POSTGRES_URL)) as tenancy:
            await tenancy.create_tenant("acme")
        monkeypatch.setenv("TENANCY_DATABASE_URL", POSTGRES_URL)
        monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", "schema")
        # doctor runs its own event loop, as the console script does.
        code, checks = await asyncio.to_thread(doctor, capsys)
    finally:
        await reset_database(POSTGRES_URL)
    assert code == 1
    storage = checks["storage"]
    assert storage["status"] == "fail"
    assert "TENANCY_ISOLATION_STRATEGY is 'schema' but 1 tenant(s) (acme)" in storage["message"]
    assert "set TENANCY_ISOLATION_STRATEGY back to row" in storage["message"]
    assert "docs/isolation.md#changing-the-isolation-strategy" in storage["message"]

"""``fastapi-tenancy doctor``: the real console script, and each check called on its own."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.cli.checks import (
    ServerFacts,
    check_database,
    check_echo,
    check_engine_cache,
    check_health_path,
    check_jwt,
    check_pool,
    check_row_isolation_wall,
    check_shared_state,
    check_sqlite_workers,
    check_ssl,
)
from tests.support.cli import cli_environment, run_cli
from tests.support.services import POSTGRES_URL, require_server


def doctor(tmp_path: Path, *args: str, url: str | None = None, **settings: str) -> Any:
    env = cli_environment(url or f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}", **settings)
    result = run_cli("doctor", "--json", *args, env=env, cwd=tmp_path)
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    return result.returncode, statuses, report


def test_default_sqlite_config_passes(tmp_path: Path) -> None:
    code, statuses, report = doctor(tmp_path)
    assert code == 0
    assert report["ok"] is True
    assert set(statuses.values()) == {"ok"}
    assert "database" in statuses


def test_doctor_creates_no_tables(tmp_path: Path) -> None:
    doctor(tmp_path)
    with closing(sqlite3.connect(tmp_path / "tenancy.db")) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_text_report_has_one_line_per_check_with_a_fix(tmp_path: Path) -> None:
    env = cli_environment(f"sqlite+aiosqlite:///{tmp_path / 'tenancy.db'}", database_echo="true")
    result = run_cli("doctor", "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    echo = next(line for line in lines if line.split()[1] == "echo")
    assert echo.startswith("warn")
    assert "TENANCY_DATABASE_ECHO=false" in echo
    assert lines[-1] == "15 ok, 3 warn, 0 fail"  # echo, sqlite with 2 workers, no shared cache


def test_echo_on_warns_without_failing(tmp_path: Path) -> None:
    code, statuses, _ = doctor(tmp_path, database_echo="true")
    assert code == 0
    assert statuses["echo"] == "warn"


def test_unreachable_database_fails_without_its_password(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://app:s3cret-pass@127.0.0.1:1/app"
    code, statuses, report = doctor(tmp_path, url=url)
    assert code == 1
    assert statuses["database"] == "fail"
    assert "s3cret-pass" not in json.dumps(report)


def test_config_that_fails_to_load_is_a_fail_not_a_traceback(tmp_path: Path) -> None:
    code, statuses, report = doctor(
        tmp_path, resolution_strategy="jwt", jwt_secret="change-me-please-0123456789abcdefghij"
    )
    assert code == 1
    assert statuses == {"config": "fail"}
    assert "placeholder" in report["checks"][0]["message"]


@pytest.mark.postgres
def test_pool_larger_than_postgresql_max_connections_fails(tmp_path: Path) -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    code, statuses, report = doctor(tmp_path, "--workers", "1000", url=POSTGRES_URL)
    assert code == 1
    assert statuses["pool"] == "fail"
    assert statuses["database"] == "ok"
    pool = next(check for check in report["checks"] if check["name"] == "pool")
    assert "15000 connections > max_connections" in pool["message"]


def test_remote_server_without_tls_warns() -> None:
    plain = TenancyConfig(database_url="postgresql+asyncpg://app@db.internal:5432/app")
    secure = TenancyConfig(database_url="postgresql+asyncpg://app@db.internal/app?ssl=require")
    weak = TenancyConfig(database_url="postgresql+psycopg://app@db.internal/app?sslmode=prefer")
    local = TenancyConfig(database_url="mysql+aiomysql://root@127.0.0.1:3306/app")
    assert check_ssl(plain).status == "warn"
    assert check_ssl(secure).status == "ok"
    assert check_ssl(weak).status == "warn"
    assert check_ssl(local).status == "ok"


def test_pool_sizing_counts_the_tenant_budget_under_database_isolation() -> None:
    config = TenancyConfig(
        database_url="postgresql+asyncpg://app@127.0.0.1/app",
        isolation_strategy="database",
        database_url_template="postgresql+asyncpg://app@127.0.0.1/{database}",
        database_pool_size=5,
        database_max_overflow=5,
        database_connection_budget=20,
    )
    assert check_pool(config, workers=3, max_connections=90).status == "ok"
    assert check_pool(config, workers=4, max_connections=90).status == "fail"
    assert check_pool(config, workers=4, max_connections=None).status == "warn"


def test_sqlite_with_several_workers_warns() -> None:
    config = TenancyConfig(database_url="sqlite+aiosqlite:///./app.db")
    assert check_sqlite_workers(config, 1).status == "ok"
    assert check_sqlite_workers(config, 4).status == "warn"


def test_health_outside_excluded_paths_warns() -> None:
    assert check_health_path(TenancyConfig(excluded_paths="/docs")).status == "warn"
    # "/health" alone is that one path: the probes below it would still need a tenant.
    assert check_health_path(TenancyConfig(excluded_paths="/health")).status == "warn"
    assert check_health_path(TenancyConfig()).status == "ok"


def test_echo_check_follows_database_echo() -> None:
    assert check_echo(TenancyConfig(database_echo=True)).status == "warn"
    assert check_echo(TenancyConfig()).status == "ok"


def test_engine_cache_smaller_than_the_tenant_count_warns(tmp_path: Path) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        isolation_strategy="database",
        database_url_template=f"sqlite+aiosqlite:///{tmp_path}/{{database}}.db",
        max_cached_engines=10,
    )
    assert check_engine_cache(config, 10).status == "ok"
    assert check_engine_cache(config, 11).status == "warn"
    assert check_engine_cache(TenancyConfig(max_cached_engines=1), 500).status == "ok"


def test_database_check_reports_the_probe_error() -> None:
    assert check_database(ServerFacts(reachable=True)).status == "ok"
    failed = check_database(ServerFacts(reachable=False, error="db:5432 is unreachable"))
    assert (failed.status, failed.message) == ("fail", "db:5432 is unreachable")


def test_cached_tenants_without_redis_warn_when_several_workers_run() -> None:
    # A suspension in one worker would reach the others only after cache_ttl.
    cached = TenancyConfig()
    assert "cache_ttl=60 s" in check_shared_state(cached, workers=2).message
    assert check_shared_state(cached, workers=1).status == "ok"
    assert check_shared_state(TenancyConfig(cache_enabled=False), workers=2).status == "ok"
    shared = TenancyConfig(redis_url="redis://127.0.0.1:6379/0")
    assert check_shared_state(shared, workers=2).status == "ok"


def test_rate_limits_without_redis_warn_when_several_workers_run() -> None:
    limited = TenancyConfig(enable_rate_limiting=True)
    assert check_shared_state(limited, workers=4).status == "warn"
    assert check_shared_state(limited, workers=1).status == "ok"
    shared = TenancyConfig(enable_rate_limiting=True, redis_url="redis://127.0.0.1:6379/0")
    assert check_shared_state(shared, workers=4).status == "ok"


def test_jwt_keys_from_a_jwks_are_reported_as_such() -> None:
    config = TenancyConfig(
        resolution_strategy="jwt",
        jwt_algorithm="RS256",
        jwt_jwks_url="https://issuer.example/.well-known/jwks.json",
    )
    result = check_jwt(config)
    assert result.status == "ok"
    assert "JWKS at https://issuer.example/.well-known/jwks.json" in result.message


def test_row_isolation_on_postgresql_without_row_level_security_warns() -> None:
    postgres = "postgresql+asyncpg://app@127.0.0.1/app"
    bare = check_row_isolation_wall(TenancyConfig(database_url=postgres))
    assert bare.status == "warn"
    assert "raw SQL" in bare.message
    assert "TENANCY_ROW_LEVEL_SECURITY=true" in bare.hint
    walled = TenancyConfig(database_url=postgres, row_level_security=True)
    assert check_row_isolation_wall(walled).status == "ok"
    schema = TenancyConfig(database_url=postgres, isolation_strategy="schema")
    assert check_row_isolation_wall(schema).status == "ok"
    # SQLite and MariaDB have no row-level security to turn on.
    assert check_row_isolation_wall(TenancyConfig()).status == "ok"
    mariadb = TenancyConfig(database_url="mysql+aiomysql://app@127.0.0.1/app")
    assert check_row_isolation_wall(mariadb).status == "ok"

"""Mistakes a new user makes fail at start with one line that names the setting and the fix.

The server-level checks run a real uvicorn: a server that cannot serve correctly must exit
non-zero before it listens, never start and answer 500 on every path.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy import (
    ConfigurationError,
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    get_current_tenant,
    get_tenant_session,
)
from fastapi_tenancy.health import health_router
from fastapi_tenancy.testing import run_app, tenant_client
from tests.support import apps
from tests.support.models import Base
from tests.support.services import POSTGRES_URL, require_server, reset_database

# Makes `import asyncpg` fail in the server process, as on a machine without the postgres extra.
HIDE_ASYNCPG = """
import sys

class _HideAsyncpg:
    def find_spec(self, name, path=None, target=None):
        if name == "asyncpg" or name.startswith("asyncpg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _HideAsyncpg())
"""

APP = """
from fastapi import Depends, FastAPI
from fastapi_tenancy import TenancyConfig, TenancyMiddleware, get_tenant_session

app = FastAPI()
app.add_middleware(TenancyMiddleware{arguments})

@app.get("/items")
async def items(session=Depends(get_tenant_session)):
    return []
"""

SERVER_SECONDS = 60


def server_environment(directory: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("TENANCY_") and not name.startswith("TENANCY_TEST_"))
    }
    env["PYTHONPATH"] = str(directory)
    env.update({f"TENANCY_{name.upper()}": value for name, value in settings.items()})
    return env


async def run_server(directory: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run uvicorn on ``directory/app.py`` until it exits; its exit code and log lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--port",
        "0",
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SERVER_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode().splitlines()


def write_app(directory: Path, arguments: str, *, hide_asyncpg: bool = False) -> None:
    (directory / "app.py").write_text(APP.format(arguments=arguments))
    if hide_asyncpg:
        (directory / "sitecustomize.py").write_text(HIDE_ASYNCPG)


def library_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "fastapi-tenancy" in line or "Traceback" in line]


@pytest.mark.parametrize("arguments", [", config=TenancyConfig()", ""], ids=["config", "env"])
async def test_a_missing_driver_refuses_to_start_with_the_install_command(
    tmp_path: Path, arguments: str
) -> None:
    write_app(tmp_path, arguments, hide_asyncpg=True)
    env = server_environment(tmp_path, database_url="postgresql+asyncpg://app@127.0.0.1:9/app")
    code, lines = await run_server(tmp_path, env)
    assert code != 0, lines
    assert library_lines(lines) == [
        "ERROR:    fastapi-tenancy: postgresql+asyncpg://app@127.0.0.1:9/app needs the asyncpg "
        'driver, which is not installed: pip install "fastapi-tenancy-kit[postgres]"'
    ], lines
    assert not any("Uvicorn running" in line or "unsupported" in line for line in lines), lines


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgresql://app@127.0.0.1:9/app", "postgresql:// names no driver; use postgresql+"),
        ("mysql+pymysql://app@127.0.0.1:9/app", "pymysql is a synchronous driver; use mysql+"),
    ],
)
async def test_a_sync_driver_url_refuses_to_start_naming_the_async_one(
    tmp_path: Path, url: str, fix: str
) -> None:
    write_app(tmp_path, "")
    code, lines = await run_server(tmp_path, server_environment(tmp_path, database_url=url))
    assert code != 0, lines
    (line,) = library_lines(lines)
    assert f"TENANCY_DATABASE_URL: {fix}" in line, lines
    assert not any("Uvicorn running" in line for line in lines), lines


# Routes that need a tenant under an excluded path.


def tenant_app(excluded_paths: str | None = None) -> tuple[FastAPI, TenancyConfig]:
    settings: dict[str, Any] = {} if excluded_paths is None else {"excluded_paths": excluded_paths}
    config = TenancyConfig(database_url="sqlite+aiosqlite:///:memory:", **settings)
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=config)

    @app.get("/docs/{doc_id}")
    async def document(doc_id: int, tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"tenant": tenant.identifier}

    return app, config


async def test_an_app_route_under_a_docs_url_gets_its_tenant_by_default() -> None:
    app, config = tenant_app()
    async with run_app(app) as harness:
        await harness.tenancy.create_tenant("acme")
        async with tenant_client(app, config, "acme") as client:
            assert (await client.get("/docs/1")).json() == {"tenant": "acme"}
        async with tenant_client(app, config) as client:
            assert (await client.get("/docs")).status_code == 200
            assert (await client.get("/openapi.json")).status_code == 200
            assert (await client.get("/docs/1")).status_code == 404  # no tenant named


async def test_a_tenant_route_under_an_excluded_path_refuses_to_start() -> None:
    app, _ = tenant_app("/health/*,/docs/*")
    with pytest.raises(ConfigurationError) as refused:
        async with run_app(app):
            pass
    assert str(refused.value) == (
        "route GET /docs/{doc_id} needs a tenant (get_current_tenant) but TENANCY_EXCLUDED_PATHS "
        "serves it without one (/docs/*): move the route, or narrow the entry"
    )


async def test_a_tenant_dependency_nested_in_another_is_found() -> None:
    async def owner(session: AsyncSession = Depends(get_tenant_session)) -> str:
        return "x"

    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig())
    router = APIRouter(prefix="/health")

    @router.get("/tenant-check")
    async def check(who: str = Depends(owner)) -> str:
        return who

    app.include_router(router)
    with pytest.raises(ConfigurationError, match=r"route GET /health/tenant-check needs a tenant"):
        async with run_app(app):
            pass


async def test_a_server_refuses_to_start_with_a_tenant_route_under_an_excluded_path(
    tmp_path: Path,
) -> None:
    write_app(tmp_path, "")
    env = server_environment(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        excluded_paths="/items",
    )
    code, lines = await run_server(tmp_path, env)
    assert code != 0, lines
    assert library_lines(lines) == [
        "ERROR:    fastapi-tenancy: route GET /items needs a tenant (get_tenant_session) but "
        "TENANCY_EXCLUDED_PATHS serves it without one (/items): move the route, or narrow the entry"
    ], lines


# Tenants created under another isolation strategy.


@pytest.mark.postgres
async def test_switching_from_row_to_schema_refuses_to_start_with_the_steps() -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    try:
        async with Tenancy(TenancyConfig(database_url=POSTGRES_URL)) as tenancy:
            await tenancy.create_tenant("acme")
            await tenancy.create_tenant("globex")
        app = apps.create_app(TenancyConfig(database_url=POSTGRES_URL, isolation_strategy="schema"))
        with pytest.raises(ConfigurationError) as refused:
            async with run_app(app):
                pass
    finally:
        await reset_database(POSTGRES_URL)
    assert str(refused.value) == (
        "TENANCY_ISOLATION_STRATEGY is 'schema' but 2 tenant(s) (acme, globex) were created under "
        "row isolation: they have no schema of their own; set TENANCY_ISOLATION_STRATEGY back to "
        "row, or move them to the new strategy as "
        "docs/isolation.md#changing-the-isolation-strategy describes"
    )


@pytest.mark.postgres
async def test_switching_from_schema_to_row_refuses_to_start() -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    try:
        schema = TenancyConfig(
            database_url=POSTGRES_URL, isolation_strategy="schema", tenant_metadata=Base.metadata
        )
        async with Tenancy(schema) as tenancy:
            await tenancy.create_tenant("acme")
        app = apps.create_app(TenancyConfig(database_url=POSTGRES_URL))
        with pytest.raises(ConfigurationError, match=r"is 'row' but 1 tenant\(s\) \(acme\)"):
            async with run_app(app):
                pass
    finally:
        await reset_database(POSTGRES_URL)


# Tenants that would get no tables.


async def test_creating_a_tenant_that_would_get_no_tables_is_refused(tmp_path: Path) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 't.db'}", tenant_metadata=MetaData()
    )
    async with Tenancy(config) as tenancy:
        with pytest.raises(ConfigurationError) as refused:
            await tenancy.create_tenant("acme")
        assert await tenancy.list_tenants(include_deleted=True) == []
        # Left to a provisioning worker, which checks the same before it provisions anything.
        assert (await tenancy.create_tenant("globex", provision=False)).status.value == "pending"
    assert str(refused.value) == (
        "cannot create tenant 'acme': it would get no tables: TENANCY_TENANT_METADATA "
        f"{MetaData()!r} holds no table; set TENANCY_TENANT_METADATA to your models' metadata "
        "('myapp.models:Base.metadata'), or TENANCY_TENANT_TABLES=none when Alembic creates "
        "them (or the app keeps none)"
    )


async def test_alembic_owned_tables_let_a_tenant_be_created_without_them(tmp_path: Path) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
        tenant_metadata=MetaData(),
        tenant_tables="none",
    )
    async with Tenancy(config) as tenancy:
        assert (await tenancy.create_tenant("acme")).status.value == "active"


async def test_an_exact_entry_above_tenant_free_routes_warns_with_the_subtree_form(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, config=TenancyConfig(excluded_paths="/health,/docs"))
    app.include_router(health_router())
    with caplog.at_level("WARNING", logger="fastapi_tenancy"):
        async with run_app(app):
            pass
    assert [record.getMessage() for record in caplog.records] == [
        "TENANCY_EXCLUDED_PATHS entry /health matches that path only, so GET /health/live, "
        "GET /health/ready need a tenant; write /health/* to serve them without one"
    ]

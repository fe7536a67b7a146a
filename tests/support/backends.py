"""Tables of backends, limits-style: one test body runs over every backend, a marker per server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_tenancy import TenancyConfig
from tests.support.models import Base
from tests.support.services import TEST_STORAGE_PREFIX as TEST_STORAGE_PREFIX

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]

all_databases = pytest.mark.parametrize("database_url", DATABASES, indirect=True)

# (isolation strategy, database) pairs: the isolation contract runs over every one.
ISOLATIONS = [
    pytest.param(("row", "sqlite"), id="row-sqlite"),
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="row-postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="row-mysql"),
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    pytest.param(("database", "sqlite"), id="database-sqlite"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
    pytest.param(("database", "mysql"), marks=pytest.mark.mysql, id="database-mysql"),
]

all_isolations = pytest.mark.parametrize("isolation_case", ISOLATIONS, indirect=True)

# `database_connection_budget` of `isolation_config` under database isolation.
TEST_CONNECTION_BUDGET = 20


def isolation_config(case: tuple[str, str], **overrides: Any) -> TenancyConfig:
    """The config for an ``isolation_case``: its strategy and database, the test models."""
    strategy, url = case
    settings: dict[str, Any] = {
        "database_url": url,
        "isolation_strategy": strategy,
        "tenant_metadata": Base.metadata,
        "schema_prefix": TEST_STORAGE_PREFIX,
    }
    if strategy == "database":
        settings["database_url_template"] = database_url_template(url)
        # Parallel runs (one per worker, and other suites) share the servers' 100 connections:
        # tenant engines of one test hold at most this many (the default budget is 50).
        settings["database_connection_budget"] = TEST_CONNECTION_BUDGET
    return TenancyConfig(**(settings | overrides))


def database_url_template(central_url: str) -> str:
    """Tenant databases next to the central one: same server, or the same folder for SQLite."""
    parsed = make_url(central_url)
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or ".").parent
        return f"sqlite+aiosqlite:///{folder}/{{database}}.db"
    rendered = parsed.set(database="DATABASE").render_as_string(hide_password=False)
    return rendered.replace("/DATABASE", "/{database}")


async def schema_exists(conn: AsyncConnection, name: str | None) -> bool:
    """Whether the server behind ``conn`` has a schema (a database, on MariaDB) named ``name``."""

    def check(sync_conn: Connection) -> bool:
        return name in inspect(sync_conn).get_schema_names()

    return await conn.run_sync(check)

"""Engine construction: one place turns the pool settings of `TenancyConfig` into an AsyncEngine."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError

__all__ = ["create_engine", "redact_url"]

SQLITE_BUSY_TIMEOUT_SECONDS = 30


def redact_url(url: str | URL) -> str:
    """The URL with its password masked, safe for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may itself hold a secret
        return "<unparsable database URL>"


def create_engine(
    config: TenancyConfig,
    url: str | None = None,
    *,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    null_pool: bool = False,
) -> AsyncEngine:
    """An AsyncEngine for ``url`` (default: ``config.database_url``) with the configured pool.

    ``pool_size`` and ``max_overflow`` override the central pool's sizes (tenant engines are small).
    ``null_pool`` opens a new connection for every use and keeps none (readiness checks), except
    for an in-memory SQLite database, which only exists in its one shared connection.
    """
    try:
        parsed = make_url(url or config.database_url)
    except Exception as exc:
        raise ConfigurationError(
            f"database URL {redact_url(url or config.database_url)} cannot be parsed"
        ) from exc
    options: dict[str, Any] = {"echo": config.database_echo}
    pool: dict[str, Any] = {
        "pool_size": config.database_pool_size if pool_size is None else pool_size,
        "max_overflow": config.database_max_overflow if max_overflow is None else max_overflow,
        "pool_timeout": config.database_pool_timeout,
        "pool_recycle": config.database_pool_recycle,
        "pool_pre_ping": config.database_pool_pre_ping,
    }
    if null_pool:
        pool = {"poolclass": NullPool}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, options, pool)
    options.update(pool)
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    if config.database_pgbouncer and parsed.get_driver_name() == "asyncpg":
        # PgBouncer in transaction mode hands each transaction to any server connection, so a
        # prepared statement must never outlive its transaction or reuse a name: no caches, and
        # a fresh name for every statement.
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": "0"})
        options["connect_args"] = {
            "statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    try:
        return create_async_engine(parsed, **options)
    except ImportError as exc:
        raise ConfigurationError(
            f"the driver for {redact_url(parsed)} is not installed: install "
            "fastapi-tenancy[postgres] (asyncpg) or fastapi-tenancy[mysql] (aiomysql)"
        ) from exc


def _unique_statement_name() -> str:
    return f"__fastapi_tenancy_{uuid.uuid4().hex}__"


def _sqlite_engine(parsed: URL, options: dict[str, Any], pool: dict[str, Any]) -> AsyncEngine:
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(parsed):
        # Every connection to an in-memory database is a new, empty database: share one.
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        options.update(pool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    engine = create_async_engine(parsed, **options)
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer, so concurrent tenant requests do not fail with
    # "database is locked"; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    finally:
        cursor.close()

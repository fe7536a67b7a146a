"""Creating and dropping whole databases on PostgreSQL, MariaDB/MySQL and SQLite.

Names reach this module already validated (`naming.checked_storage_name`); each statement still
quotes them with the dialect's own rules.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy.exceptions import ConfigurationError

__all__ = ["create_database", "drop_database"]

_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


async def create_database(url: str, name: str) -> None:
    """Create the database ``url`` points at, named ``name``; fails if it already exists."""
    parsed = _checked(url, name)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        await asyncio.to_thread(_create_sqlite_file, Path(parsed.database or ""))
        return
    statement = (
        f"CREATE DATABASE {_quote(parsed, name)}"
        if backend == "postgresql"
        else f"CREATE DATABASE {_quote(parsed, name)} CHARACTER SET utf8mb4"
    )
    await _run_on_server(parsed, statement)


async def drop_database(url: str, name: str) -> None:
    """Drop the database ``url`` points at, closing any session still connected to it."""
    parsed = _checked(url, name)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        await asyncio.to_thread(_remove_sqlite_files, parsed.database or "")
        return
    force = " WITH (FORCE)" if backend == "postgresql" else ""
    await _run_on_server(parsed, f"DROP DATABASE IF EXISTS {_quote(parsed, name)}{force}")


def _create_sqlite_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.touch(exist_ok=False)
    except FileExistsError as exc:
        raise ConfigurationError(f"database file {path} already exists") from exc


def _remove_sqlite_files(database: str) -> None:
    for suffix in _SQLITE_SUFFIXES:
        Path(f"{database}{suffix}").unlink(missing_ok=True)


def _checked(url: str, name: str) -> URL:
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        database = Path(database).stem
    if database != name:
        raise ConfigurationError(
            f"the tenant database URL names {database!r}, not the tenant's database {name!r}"
        )
    return parsed


async def _run_on_server(parsed: URL, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction, nor while connected to that database.
    # PostgreSQL always needs some database to connect to; MySQL connects to the server itself.
    maintenance = "postgres" if parsed.get_backend_name() == "postgresql" else None
    engine = create_async_engine(
        parsed._replace(database=maintenance), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _quote(parsed: URL, name: str) -> str:
    return '"' + name + '"' if parsed.get_backend_name() == "postgresql" else "`" + name + "`"

"""Creating and dropping whole databases on PostgreSQL, MariaDB/MySQL and SQLite.

Names reach this module already validated (`naming.checked_storage_name`); each statement still
quotes them with the dialect's own rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import zlib
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy.exceptions import ConfigurationError

__all__ = ["create_database", "database_mark", "drop_database"]

_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


async def create_database(url: str, name: str, *, mark: str = "") -> None:
    """Create the database ``url`` points at, named ``name``; fails if it already exists.

    ``mark`` (already safe to inline) becomes the database's comment where the server keeps one:
    PostgreSQL (set right after creating) and MariaDB (in the same statement).
    """
    parsed = _checked(url, name)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        await asyncio.to_thread(_create_sqlite_file, Path(parsed.database or ""), mark)
        return
    quoted = _quote(parsed, name)
    if backend == "postgresql":
        statements = [f"CREATE DATABASE {quoted}"]
        if mark:
            statements.append(f"COMMENT ON DATABASE {quoted} IS '{mark}'")
    else:
        statements = [f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4"]
        if mark:
            statements = [f"{statements[0]} /*M!100500 COMMENT '{mark}' */"]
    await _run_on_server(parsed, *statements)


async def database_mark(url: str, name: str, *, expected: str = "") -> str | None:
    """``None`` if the database does not exist, else its comment (``""`` when it has none).

    SQLite keeps no comment, only a 32-bit ``application_id``: there the answer is ``expected``
    when the file carries that mark's number, and a description of the number otherwise.
    """
    parsed = _checked(url, name)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return await asyncio.to_thread(_sqlite_mark, Path(parsed.database or ""), expected)
    if backend == "postgresql":
        query = (
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
            "WHERE datname = :name"
        )
    else:
        # SCHEMA_COMMENT exists on MariaDB only; MySQL databases have no comment.
        query = "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"
    engine = _server_engine(parsed)
    try:
        async with engine.connect() as conn:
            if getattr(conn.dialect, "is_mariadb", False):
                query = query.replace("SELECT SCHEMA_NAME", "SELECT SCHEMA_COMMENT")
            row = (await conn.execute(text(query), {"name": name})).first()
    finally:
        await engine.dispose()
    if row is None:
        return None
    return "" if backend != "postgresql" and row[0] == name else str(row[0] or "")


async def drop_database(url: str, name: str) -> None:
    """Drop the database ``url`` points at, closing any session still connected to it."""
    parsed = _checked(url, name)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        await asyncio.to_thread(_remove_sqlite_files, parsed.database or "")
        return
    force = " WITH (FORCE)" if backend == "postgresql" else ""
    await _run_on_server(parsed, f"DROP DATABASE IF EXISTS {_quote(parsed, name)}{force}")


def _create_sqlite_file(path: Path, mark: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.touch(exist_ok=False)
    except FileExistsError as exc:
        raise ConfigurationError(f"database file {path} already exists") from exc
    if mark:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA application_id = {_application_id(mark)}")


def _sqlite_mark(path: Path, expected: str) -> str | None:
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        found = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if not found:
        return ""
    if expected and found == _application_id(expected):
        return expected
    return f"application_id {found}"


def _application_id(mark: str) -> int:
    # A positive, non-zero 32-bit number (zero means "no application id").
    return (zlib.crc32(mark.encode()) & 0x7FFFFFFF) | 1


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


async def _run_on_server(parsed: URL, *statements: str) -> None:
    engine = _server_engine(parsed)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _server_engine(parsed: URL) -> AsyncEngine:
    # CREATE/DROP DATABASE cannot run inside a transaction, nor while connected to that database.
    # PostgreSQL always needs some database to connect to; MySQL connects to the server itself.
    maintenance = "postgres" if parsed.get_backend_name() == "postgresql" else None
    return create_async_engine(
        parsed._replace(database=maintenance), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )


def _quote(parsed: URL, name: str) -> str:
    return '"' + name + '"' if parsed.get_backend_name() == "postgresql" else "`" + name + "`"

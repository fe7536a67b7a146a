"""Reading a database's Alembic revision cheaply, and what revision an upgrade aims at."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["VERSION_TABLE", "format_revisions", "read_revisions", "target_revisions"]

VERSION_TABLE = "alembic_version"


async def read_revisions(
    conn: AsyncConnection, schema: str | None, *, table: str = VERSION_TABLE
) -> frozenset[str]:
    """The revisions recorded in ``schema``'s version table; empty when there is no table."""
    return await conn.run_sync(_read, schema, table)


def _read(conn: Connection, schema: str | None, name: str) -> frozenset[str]:
    # Looking the table up first keeps a PostgreSQL transaction usable when it is missing.
    if not inspect(conn).has_table(name, schema=schema):
        return frozenset()
    table = Table(name, MetaData(), Column("version_num", String(32)), schema=schema)
    return frozenset(conn.execute(select(table.c.version_num)).scalars())


def target_revisions(script: ScriptDirectory, revision: str) -> frozenset[str] | None:
    """The revision ids a database holds once upgraded to ``revision``.

    ``None`` when that depends on where the database is now (``+1``, ``base``, ...): such
    upgrades always go through Alembic.
    """
    if revision == "head":
        head = script.get_current_head()  # raises CommandError when there are several heads
        return frozenset({head}) if head is not None else None
    if revision == "heads":
        return frozenset(script.get_heads())
    if revision == "base":
        return frozenset()
    try:
        return frozenset({script.get_revision(revision).revision})
    except (CommandError, AttributeError, ValueError):
        return None


def format_revisions(revisions: frozenset[str]) -> str | None:
    return ",".join(sorted(revisions)) or None

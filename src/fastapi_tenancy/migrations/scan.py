"""Reading every tenant's Alembic revision in a few queries, before any tenant is touched.

Under schema isolation every tenant's ``alembic_version`` table is on the central server
(``"<schema>".alembic_version`` on PostgreSQL, ```<database>`.alembic_version`` on
MariaDB/MySQL), so one statement can read many of them: the catalog says which schemas have a
version table, and a ``UNION ALL`` over those tables returns every revision. The runner skips a
tenant found at the target without connecting to it, taking its lock or starting Alembic.

The scan only ever proves that a tenant is current. A tenant it cannot read (the schema is gone,
the table is malformed, a batch fails for any reason) is left out of the answer and goes through
the per-tenant path, which reads its revision again under the lock, so a tenant that is behind
is never skipped.

Statements are batched: a ``SELECT`` locks every table it reads until its transaction ends, and
thousands at once would exhaust PostgreSQL's shared lock table (``max_locks_per_transaction``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.migrations.versions import VERSION_TABLE

__all__ = ["SCAN_BATCH", "scan_revisions"]

logger = logging.getLogger("fastapi_tenancy.migrations")

# Tables per UNION ALL: with their primary-key indexes, 2 x 200 locks, well inside PostgreSQL's
# default lock table (64 per connection slot) even with other sessions busy.
SCAN_BATCH = 200
_CATALOG_BATCH = 5000


async def scan_revisions(engine: AsyncEngine, schemas: Iterable[str]) -> dict[str, frozenset[str]]:
    """The revisions recorded in each of ``schemas``' version tables on ``engine``'s server.

    A schema that exists without a version table maps to an empty set; one that is missing,
    or whose table could not be read, is absent from the answer.
    """
    names = sorted({checked_storage_name(name) for name in schemas})
    found: dict[str, frozenset[str]] = {}
    if not names:
        return found
    async with engine.connect() as conn:
        versioned: list[str] = []
        for start in range(0, len(names), _CATALOG_BATCH):
            batch = names[start : start + _CATALOG_BATCH]
            async with conn.begin():
                existing, tables = await _catalog(conn, batch)
            found.update(dict.fromkeys(existing - tables.keys(), frozenset()))
            versioned.extend(name for name in batch if tables.get(name))
        for start in range(0, len(versioned), SCAN_BATCH):
            batch = versioned[start : start + SCAN_BATCH]
            try:
                async with conn.begin():
                    found.update(await _versions(conn, batch))
            except Exception:
                # One unreadable table fails its batch: those tenants take the per-tenant path.
                logger.debug("bulk revision read failed for %d schemas", len(batch), exc_info=True)
                if conn.invalidated:
                    return found
    return found


async def _catalog(conn: AsyncConnection, names: Sequence[str]) -> tuple[set[str], dict[str, bool]]:
    """Which of ``names`` exist, and for those with a version table, whether it is readable.

    Readable means it has the ``version_num`` column Alembic writes; a table without one is
    left to the per-tenant path, which reports the error.
    """
    params = {"names": list(names), "table": VERSION_TABLE}
    if conn.dialect.name == "postgresql":
        existing_sql = text("SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names)")
        # The relation kinds SQLAlchemy's has_table finds, as the per-tenant path does.
        table_sql = text(
            "SELECT n.nspname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
            "AND a.attname = 'version_num' AND NOT a.attisdropped) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :table AND c.relkind IN ('r', 'p', 'f', 'v', 'm') "
            "AND n.nspname = ANY(:names)"
        )
    else:
        existing_sql = text(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN :names"
        ).bindparams(bindparam("names", expanding=True))
        table_sql = text(
            "SELECT TABLE_SCHEMA, SUM(COLUMN_NAME = 'version_num') > 0 "
            "FROM information_schema.COLUMNS "
            "WHERE TABLE_NAME = :table AND TABLE_SCHEMA IN :names GROUP BY TABLE_SCHEMA"
        ).bindparams(bindparam("names", expanding=True))
    existing = {str(row[0]) for row in await conn.execute(existing_sql, params)}
    tables = {str(row[0]): bool(row[1]) for row in await conn.execute(table_sql, params)}
    return existing, {name: readable for name, readable in tables.items() if name in existing}


async def _versions(conn: AsyncConnection, names: Sequence[str]) -> dict[str, frozenset[str]]:
    # Names are checked storage names (lower-case letters, digits, underscores): safe to inline,
    # quoted anyway with the dialect's own rules.
    quote = conn.dialect.identifier_preparer.quote_identifier
    table = quote(VERSION_TABLE)
    parts = [
        f"SELECT {index} AS n, version_num FROM {quote(name)}.{table}"
        for index, name in enumerate(names)
    ]
    revisions: dict[str, set[str]] = {name: set() for name in names}
    for index, version in await conn.execute(text(" UNION ALL ".join(parts))):
        if version is not None:
            revisions[names[int(index)]].add(str(version))
    return {name: frozenset(found) for name, found in revisions.items()}

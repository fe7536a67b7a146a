"""The library's own tables in the central database, under an Alembic history of their own.

``tenancy_tenants``, ``tenancy_domains`` and ``tenancy_audit`` are defined where they are used
(`fastapi_tenancy.store.sqlalchemy`, `fastapi_tenancy.observe.audit`); ``versions/`` holds the
revisions that bring a database from the previous release's schema to those definitions, and
the ``tenancy_alembic_version`` table records where a database is (an app's own
``alembic_version``, in the same database under row isolation, is never touched).

`upgrade_central` runs at start (``TENANCY_CENTRAL_MIGRATIONS=auto``, the default) and from
``fastapi-tenancy migrate central``, under the same cross-process lock the tenant runner uses
(an advisory lock on PostgreSQL, ``GET_LOCK`` on MariaDB/MySQL, ``BEGIN IMMEDIATE`` on SQLite):

* at head already: one read, no lock, no Alembic;
* an empty database, upgraded to head: the tables are created from their definitions and
  stamped at head, as
  Alembic's cookbook does for a new database (the head equals the definitions: a test compares
  them on every backend);
* tables but no version table (made by ``create_all`` before this history): every revision
  runs, each creating only what is missing, so existing tables and rows are kept;
* behind: the missing revisions run.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.migrations.environment import CONNECTION_KEY
from fastapi_tenancy.migrations.invoke import alembic_lock
from fastapi_tenancy.migrations.locks import migration_transaction
from fastapi_tenancy.migrations.versions import format_revisions, read_revisions

__all__ = [
    "CENTRAL_LOCK_KEY",
    "VERSION_TABLE",
    "CentralMigration",
    "CentralTablesBehind",
    "central_differences",
    "central_head",
    "central_metadata",
    "central_revision",
    "central_table_names",
    "check_central",
    "compare_options",
    "downgrade_central",
    "upgrade_central",
]

VERSION_TABLE = "tenancy_alembic_version"
# Tenant lock keys are hex ids and row isolation's is "shared": this one is never theirs.
CENTRAL_LOCK_KEY = "central"
SCRIPT_LOCATION = Path(__file__).parent
DEFAULT_LOCK_TIMEOUT = 300.0

CentralOutcome = Literal["created", "upgraded", "downgraded", "skipped"]


class CentralTablesBehind(ConfigurationError):
    """The central tables are not at the head this release needs, and start may not upgrade them."""


@dataclass(frozen=True, slots=True)
class CentralMigration:
    """What happened to the central tables: ``created`` (an empty database), ``upgraded``,
    ``downgraded`` or ``skipped`` (already there); revisions as in `TenantMigration`."""

    outcome: CentralOutcome
    from_revision: str | None
    to_revision: str | None
    seconds: float


def central_metadata() -> list[MetaData]:
    """The MetaData of every central table, as this release defines them."""
    from fastapi_tenancy.observe.audit import audit_metadata
    from fastapi_tenancy.store.sqlalchemy import tenants_metadata

    return [tenants_metadata, audit_metadata]


def central_table_names() -> frozenset[str]:
    """The central tables and the version table: what an app's own autogenerate leaves alone."""
    names = {name for metadata in central_metadata() for name in metadata.tables}
    return frozenset(names | {VERSION_TABLE})


def compare_options() -> dict[str, Any]:
    """``context.configure`` options for comparing the central tables with a database."""
    tables = central_table_names() - {VERSION_TABLE}

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        # An app's tables share the central database under row isolation: not ours to compare.
        return type_ != "table" or name in tables

    return {"include_name": include_name, "compare_type": _compare_type}


def _compare_type(
    context: MigrationContext,
    _inspected: Any,
    _column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    # MariaDB's JSON is an alias of LONGTEXT and is reflected as such.
    if context.dialect.name in ("mysql", "mariadb") and type(metadata_type).__name__ == "JSON":
        return type(inspected_type).__name__ not in ("JSON", "LONGTEXT")
    return None


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def central_head() -> str:
    """The revision this release's central tables are at."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package ships its revisions
        raise ConfigurationError("the central migration history has no revisions")
    return head


async def central_revision(engine: AsyncEngine) -> str | None:
    """The revision the central database records (``None``: none, or no version table)."""
    async with engine.connect() as conn, conn.begin():
        return format_revisions(await read_revisions(conn, None, table=VERSION_TABLE))


async def check_central(engine: AsyncEngine) -> None:
    """Raise `CentralTablesBehind` unless the central tables are at this release's head."""
    found = await central_revision(engine)
    if found != central_head():
        raise CentralTablesBehind(
            f"the central tables are at revision {found or 'none'}, this release needs "
            f"{central_head()}: run `fastapi-tenancy migrate central` (or set "
            "TENANCY_CENTRAL_MIGRATIONS=auto to upgrade them at start)"
        )


async def upgrade_central(
    engine: AsyncEngine, *, revision: str = "head", lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> CentralMigration:
    """Bring the central tables to ``revision`` (by default this release's head); safe to call
    from any number of processes at once: one upgrades, the others find it done."""
    return await _run(engine, revision, "upgrade", lock_timeout)


async def downgrade_central(
    engine: AsyncEngine, revision: str, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> CentralMigration:
    """Take the central tables back to ``revision`` (not below the baseline ``0001``, which
    holds the tenant records), to run an older release of the library."""
    return await _run(engine, revision, "downgrade", lock_timeout)


async def _run(
    engine: AsyncEngine,
    revision: str,
    direction: Literal["upgrade", "downgrade"],
    lock_timeout: float,
) -> CentralMigration:
    started = time.perf_counter()
    wanted = _wanted(revision)
    async with engine.connect() as conn:
        async with conn.begin():
            before = await read_revisions(conn, None, table=VERSION_TABLE)
        if before == wanted:
            return _result("skipped", before, before, started)
        async with migration_transaction(conn, CENTRAL_LOCK_KEY, wait_seconds=lock_timeout):
            # Another process may have upgraded while this one waited for the lock.
            before = await read_revisions(conn, None, table=VERSION_TABLE)
            if before == wanted:
                return _result("skipped", before, before, started)
            fresh = (
                revision == "head" and not before and not await conn.run_sync(_has_central_tables)
            )
            async with alembic_lock():
                await conn.run_sync(_apply, revision, "create" if fresh else direction)
            after = await read_revisions(conn, None, table=VERSION_TABLE)
    if fresh:
        return _result("created", before, after, started)
    return _result("upgraded" if direction == "upgrade" else "downgraded", before, after, started)


def _result(
    outcome: CentralOutcome, before: frozenset[str], after: frozenset[str], started: float
) -> CentralMigration:
    return CentralMigration(
        outcome=outcome,
        from_revision=format_revisions(before),
        to_revision=format_revisions(after),
        seconds=time.perf_counter() - started,
    )


def _wanted(revision: str) -> frozenset[str] | None:
    if revision == "head":
        return frozenset({central_head()})
    if revision == "base":
        return frozenset()
    try:
        found = _script().get_revision(revision)
    except Exception:
        return None  # relative ("-1") or unknown: Alembic decides, or says why not
    return frozenset({found.revision}) if found is not None else None


def _has_central_tables(connection: Connection) -> bool:
    existing = set(inspect(connection).get_table_names())
    return any(name in existing for metadata in central_metadata() for name in metadata.tables)


def _apply(connection: Connection, revision: str, step: str) -> None:
    config = copy.copy(_config())
    config.attributes = {CONNECTION_KEY: connection}
    if step == "create":
        # A new database: the tables as defined, stamped at head (equal to the definitions).
        for metadata in central_metadata():
            metadata.create_all(connection)
        command.stamp(config, "head")
    elif step == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


async def central_differences(conn: AsyncConnection) -> list[Any]:
    """How the database behind ``conn`` differs from this release's central table definitions,
    as Alembic's autogenerate sees it (empty when they match)."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={**compare_options(), "version_table": VERSION_TABLE}
        )
        # A sequence of MetaData works as in context.configure(target_metadata=[...]).
        return list(compare_metadata(context, central_metadata()))  # type: ignore[arg-type]

    return await conn.run_sync(compare)

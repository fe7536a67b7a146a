"""Back up one tenant: its record and its data, with the servers' own tools where they fit.

* schema isolation on PostgreSQL: ``pg_dump --schema=<schema>``; database isolation on
  PostgreSQL: ``pg_dump <database>``. Both run on a snapshot exported by the connection that
  counted the rows (``--snapshot``), so the counts in the manifest are exactly the dump's.
* schema or database isolation on MariaDB/MySQL (a schema there is a database):
  ``mariadb-dump --single-transaction <database>``.
* row isolation, and SQLite databases: the tenant's rows as JSON lines
  (`fastapi_tenancy.transfer.rows`), read in one repeatable-read transaction.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import text

from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.transfer.archive import ROWS_FOLDER, SQL_MEMBER, Kind, Manifest, write_archive
from fastapi_tenancy.transfer.rows import count_rows, dump_tables, storage_tables
from fastapi_tenancy.transfer.storage import Storage, locate
from fastapi_tenancy.transfer.tools import mariadb_command, postgres_command, run_tool

__all__ = ["backup_tenant", "dump_storage"]


async def backup_tenant(tenancy: Tenancy, identifier: str, output: Path) -> Manifest:
    """Write a backup of tenant ``identifier`` to ``output``; returns its manifest."""
    tenant = await tenancy.lifecycle.require(identifier)
    storage = locate(tenancy, tenant)
    with tempfile.TemporaryDirectory(prefix="tenancy-backup-") as tmp:
        folder = Path(tmp)
        kind, counts = await dump_storage(storage, folder)
        manifest = Manifest.of(
            tenant,
            kind=kind,
            strategy=storage.strategy,
            backend=storage.backend,
            tables=counts,
        )
        write_archive(output, manifest, folder)
    return manifest


async def dump_storage(
    storage: Storage, folder: Path, *, rows: bool = False
) -> tuple[Kind, dict[str, int]]:
    """Dump ``storage`` into ``folder``; returns the kind of dump and the rows per table.

    ``rows`` exports rows even where a tool would dump the schema or database: the form that
    loads into another strategy or backend.
    """
    if rows or storage.strategy == "row" or storage.backend == "sqlite":
        async with storage.connect(snapshot=True) as conn:
            tables = await conn.run_sync(
                storage_tables, schema=storage.schema, scoped_only=storage.tenant_id is not None
            )
            counts = await conn.run_sync(
                dump_tables, tables, folder / ROWS_FOLDER, tenant_id=storage.tenant_id
            )
        return "rows", counts
    if storage.backend == "postgresql":
        return "postgres-sql", await _pg_dump(storage, folder / SQL_MEMBER)
    return "mariadb-sql", await _mariadb_dump(storage, folder / SQL_MEMBER)


async def _pg_dump(storage: Storage, output: Path) -> dict[str, int]:
    async with storage.connect(snapshot=True) as conn:
        # Counted on the very snapshot pg_dump reads: the counts are the dump's, under writes too.
        snapshot = (await conn.execute(text("SELECT pg_export_snapshot()"))).scalar_one()
        tables = await conn.run_sync(storage_tables, schema=storage.schema)
        counts = await conn.run_sync(count_rows, tables, None)
        args = ["--format=plain", "--no-owner", "--no-privileges", f"--snapshot={snapshot}"]
        if storage.schema is not None:
            args.append(f"--schema={storage.schema}")
        await run_tool(postgres_command("pg_dump", storage.url, *args), stdout=output)
    return counts


async def _mariadb_dump(storage: Storage, output: Path) -> dict[str, int]:
    async with storage.connect(snapshot=True) as conn:
        tables = await conn.run_sync(storage_tables, schema=None)
        counts = await conn.run_sync(count_rows, tables, None)
    args = [
        "--single-transaction",
        "--routines",
        "--triggers",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--skip-comments",
    ]
    await run_tool(mariadb_command("mariadb-dump", storage.url, *args), stdout=output)
    return counts

"""Restore one tenant from a backup into the storage this runtime's configuration names.

The record is added first with status ``moving`` (the lifecycle's write freeze: requests get 503
with ``Retry-After``, no provisioning worker claims it), the data is loaded, the rows per table
are compared with the backup's, and only then does the tenant become ``active`` (or ``suspended``,
as it was backed up). A restore that fails removes the storage it created and the record, so it
can simply be run again.

* ``postgres-sql`` / ``mariadb-sql`` backups load with ``psql`` / ``mariadb`` into the same
  strategy on the same kind of server, into a schema or database created empty for them (under a
  new identifier the schema is renamed in the script's statements, never in its data).
* ``rows`` backups load into any strategy on any backend: the destination's tables are made by
  provisioning (the configured models), then the rows are inserted.

``as_identifier`` restores a copy beside the original: a new tenant id (every ``tenant_id`` in
the data follows it) and new storage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import text, update

from fastapi_tenancy.exceptions import ConfigurationError, TenancyError, TenantAlreadyExists
from fastapi_tenancy.isolation.ownership import owner_mark
from fastapi_tenancy.isolation.placement import place
from fastapi_tenancy.isolation.servers import create_database, database_mark, drop_database
from fastapi_tenancy.isolation.tables import TENANT_COLUMN
from fastapi_tenancy.models import Tenant, TenantStatus, new_tenant_id, validate_identifier
from fastapi_tenancy.observe.events import TenantChanged
from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.transfer.archive import ROWS_FOLDER, SQL_MEMBER, Manifest, read_archive
from fastapi_tenancy.transfer.fence import lower_fence
from fastapi_tenancy.transfer.rows import count_rows, load_tables, storage_tables
from fastapi_tenancy.transfer.storage import Storage, locate, rename_schema, schema_exists
from fastapi_tenancy.transfer.tools import mariadb_command, postgres_command, run_tool

__all__ = ["RestoreMismatch", "load_storage", "restore_tenant", "verify_counts"]


class RestoreMismatch(TenancyError):
    """The restored rows per table differ from the backup's."""


async def restore_tenant(
    tenancy: Tenancy,
    archive: Path,
    identifier: str,
    *,
    as_identifier: str | None = None,
) -> Tenant:
    """Restore tenant ``identifier`` from the backup ``archive``; returns the restored tenant."""
    with tempfile.TemporaryDirectory(prefix="tenancy-restore-") as tmp:
        folder = Path(tmp)
        manifest = read_archive(archive, folder)
        if manifest.identifier != validate_identifier(identifier):
            raise ConfigurationError(
                f"{archive} holds tenant {manifest.identifier!r}, not {identifier!r}"
            )
        _check_compatible(tenancy, manifest)
        target = validate_identifier(as_identifier or identifier)
        if await tenancy.lifecycle.get(target) is not None:
            raise TenantAlreadyExists(
                f"tenant {target!r} already exists: purge it first, or restore with --as "
                "<new-identifier>"
            )
        original = manifest.record()
        changes: dict[str, Any] = {"status": TenantStatus.MOVING, "deleted_at": None}
        if as_identifier is not None:
            changes |= {"id": new_tenant_id(), "identifier": target, "storage_name": None}
        # Placed like a new tenant: on its old server if this configuration's pool has one of
        # that name (and room), otherwise where the pool's policy puts it (or the default server).
        changes["server"] = None
        tenant = tenancy.isolation.assign_storage(original.model_copy(update=changes))
        requested = original.server if original.server in tenancy.servers.names else None
        stored = await place(tenancy.store, tenant, tenancy.servers, requested)
        await tenancy.lookup.invalidate(target)
        try:
            storage = locate(tenancy, stored)
            counts = await load_storage(
                tenancy, stored, storage, manifest, folder, old_tenant_id=original.id
            )
            if manifest.kind != "mariadb-sql":
                # mariadb-dump cannot share the counting transaction's snapshot: its counts in
                # the manifest may be a moment apart from the dump's, so only they go unchecked.
                verify_counts(manifest.tables, counts, what=f"restore of {target!r}")
        except BaseException:
            await _undo(tenancy, stored, manifest)
            raise
        final = TenantStatus(manifest.tenant.get("status", "active"))
        if final not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            final = TenantStatus.ACTIVE
        done = await tenancy.store.update_if_unchanged(
            stored.model_copy(update={"status": final}), expected=stored
        )
        if done is None:
            raise ConfigurationError(f"tenant {target!r} changed while it was being restored")
        await tenancy.lookup.invalidate(target)
        await tenancy.hooks.emit(TenantChanged(action="create", tenant=done, previous=None))
        return done


def verify_counts(expected: dict[str, int], found: dict[str, int], *, what: str) -> None:
    """Raise `RestoreMismatch` unless every table of ``expected`` has its rows in ``found``."""
    wrong = {
        name: (count, found.get(name))
        for name, count in expected.items()
        if found.get(name) != count
    }
    if wrong:
        detail = ", ".join(
            f"{name}: {want} expected, {got} found" for name, (want, got) in wrong.items()
        )
        raise RestoreMismatch(f"{what}: rows per table differ ({detail})")


def _check_compatible(tenancy: Tenancy, manifest: Manifest) -> None:
    if manifest.kind == "rows":
        return  # rows load into any strategy on any backend
    strategy = tenancy.settings.operations.isolation_strategy
    backend = tenancy.engine.url.get_backend_name()
    if strategy != manifest.strategy or backend != manifest.backend:
        raise ConfigurationError(
            f"this backup is a {manifest.kind} dump of {manifest.strategy} isolation on "
            f"{manifest.backend}; it restores only there (this configuration is {strategy} "
            f"isolation on {backend}). Back up with rows (row isolation) to change strategy."
        )


async def load_storage(
    tenancy: Tenancy,
    tenant: Tenant,
    storage: Storage,
    manifest: Manifest,
    folder: Path,
    *,
    old_tenant_id: str,
) -> dict[str, int]:
    """Create ``tenant``'s storage and load the unpacked backup in ``folder``; rows per table."""
    rename = None if old_tenant_id == tenant.id else (old_tenant_id, tenant.id)
    if manifest.kind == "rows":
        await tenancy.isolation.provision(tenant)
        async with storage.connect() as conn:
            await conn.run_sync(
                load_tables,
                folder / ROWS_FOLDER,
                schema=storage.schema,
                tenant_id=rename,
                skip_unscoped=storage.strategy == "row",
            )
        return await count_storage(storage)
    script = folder / SQL_MEMBER
    mark = owner_mark(tenant)
    if manifest.kind == "postgres-sql" and storage.schema is not None:
        async with storage.connect() as conn:
            if await schema_exists(conn, storage.schema):
                raise ConfigurationError(f"schema {storage.schema} exists already: left untouched")
        renamed = folder / "renamed.sql"
        rename_schema(script, renamed, manifest.storage_name or "", storage.schema)
        with renamed.open("a", encoding="utf-8") as out:
            # In the script's one transaction: the schema never exists without its owner's mark.
            out.write(f"\nCOMMENT ON SCHEMA \"{storage.schema}\" IS '{mark}';\n")
        await _psql(storage, renamed)
    else:
        url = storage.url.render_as_string(hide_password=False)
        if await database_mark(url, storage.name) is not None:
            raise ConfigurationError(f"database {storage.name} exists already: left untouched")
        await create_database(url, storage.name, mark=mark)
        if manifest.kind == "postgres-sql":
            await _psql(storage, script)
        else:
            await run_tool(mariadb_command("mariadb", storage.url), stdin=script)
    # A dump taken while the tenant was being moved carries its write fence: never restore it.
    await lower_fence(storage, old_tenant_id)
    if rename is not None:
        await _retag(storage, *rename)
    return await count_storage(storage)


async def count_storage(storage: Storage) -> dict[str, int]:
    """Rows per table of the tenant's storage (its own rows only, under row isolation)."""
    async with storage.connect(snapshot=True) as conn:
        tables = await conn.run_sync(
            storage_tables, schema=storage.schema, scoped_only=storage.tenant_id is not None
        )
        return await conn.run_sync(count_rows, tables, storage.tenant_id)


async def _psql(storage: Storage, script: Path) -> None:
    args = ["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--single-transaction"]
    await run_tool(postgres_command("psql", storage.url, *args, f"--file={script}"))


async def _retag(storage: Storage, old: str, new: str) -> None:
    """Give the copy's rows its new tenant id (`TenantSession` filters on it in every strategy)."""
    async with storage.connect() as conn:
        tables = await conn.run_sync(storage_tables, schema=storage.schema, scoped_only=True)
        for table in tables:
            await conn.execute(
                update(table).where(table.c[TENANT_COLUMN] == old).values({TENANT_COLUMN: new})
            )


async def _undo(tenancy: Tenancy, tenant: Tenant, manifest: Manifest) -> None:
    """Remove what a failed restore made: the storage (only if it is this tenant's), the record.

    The record goes even when the storage cannot be reached or named, so the restore can be run
    again; the storage left then is marked as the tenant's and reused or refused by that run.
    """
    try:
        await _drop_restored_storage(tenancy, tenant, manifest)
    finally:
        await tenancy.store.delete(tenant.id)
        await tenancy.lookup.invalidate(tenant.identifier)


async def _drop_restored_storage(tenancy: Tenancy, tenant: Tenant, manifest: Manifest) -> None:
    storage = locate(tenancy, tenant)
    if storage.strategy == "row" or manifest.kind == "rows":
        await tenancy.isolation.purge(tenant)
    elif storage.schema is not None:
        async with storage.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                    "WHERE nspname = :name"
                ),
                {"name": storage.schema},
            )
            row = found.first()
            if row is not None and row[0] == owner_mark(tenant):
                await conn.execute(text(f'DROP SCHEMA "{storage.schema}" CASCADE'))
    else:
        url = storage.url.render_as_string(hide_password=False)
        if await database_mark(url, storage.name, expected=owner_mark(tenant)) == owner_mark(
            tenant
        ):
            await drop_database(url, storage.name)

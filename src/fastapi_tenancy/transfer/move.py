"""Move one tenant's storage: to another server, or to another isolation strategy.

The steps, each recorded on the tenant (its ``status`` and ``metadata["tenancy_move"]``) before
the next begins, so a move interrupted anywhere is finished by running it again, or undone by
`rollback_move`:

1. **freeze**: the tenant becomes ``moving`` (a compare-and-set, invalidated in every process):
   its requests get 503 with ``Retry-After``; every other tenant is served as before.
2. **fence**: triggers on the tenant's source tables refuse every write, after waiting for the
   writes already running (`fastapi_tenancy.transfer.fence`): nothing acknowledged can be
   missed by the copy.
3. **copy**: ``pg_dump`` | ``psql`` when the strategy stays (a move to another server), the
   tenant's rows as JSON lines when it changes (`fastapi_tenancy.transfer.rows`). A partial copy
   an interrupted run left at the destination is dropped first (it carries this tenant's mark,
   and the record does not point at it yet).
4. **verify**: rows per table at the destination equal the (fenced, so unchanging) source's.
5. **switch**: one compare-and-set points the record at the new storage and makes the tenant
   ``active`` again; invalidated everywhere, like every tenant change.
6. **drop the source**, only when asked (``drop_source``, now or by running the same move again
   later): until then the old copy stays, fenced, and the record remembers where it is
   (``metadata["tenancy_moved_from"]``).

A failure in steps 2-4 rolls the move back at once (fence down, partial copy dropped, tenant
``active`` where it was) and re-raises; an interruption (Ctrl-C, a killed process) leaves the
tenant ``moving`` for the next run to continue, or for `rollback_move`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text

from fastapi_tenancy._secrets import redact_url
from fastapi_tenancy.exceptions import ConfigurationError, InvalidTransition
from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.isolation.ownership import owner_mark
from fastapi_tenancy.isolation.placement import (
    DEFAULT_SERVER,
    ServerFull,
    counts_by_server,
)
from fastapi_tenancy.isolation.servers import database_mark, drop_database
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.transfer.archive import Manifest
from fastapi_tenancy.transfer.backup import dump_storage
from fastapi_tenancy.transfer.fence import lower_fence, raise_fence
from fastapi_tenancy.transfer.restore import count_storage, load_storage, verify_counts
from fastapi_tenancy.transfer.rows import storage_tables
from fastapi_tenancy.transfer.storage import Storage, locate

__all__ = [
    "MOVED_FROM_KEY",
    "MOVE_KEY",
    "Target",
    "drop_old_copy",
    "move_tenant",
    "rollback_move",
    "server_target",
    "url_target",
]

# The move under way, in the tenant's metadata: {"to": <target label>, "step": <last step done>}.
MOVE_KEY = "tenancy_move"
# After a move: the record fields of the old copy, until it is dropped.
MOVED_FROM_KEY = "tenancy_moved_from"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where a tenant goes: the runtime whose configuration serves it afterwards (the same one
    for a move between servers, one with another ``isolation_strategy`` for a change of
    strategy), and the record fields that point at the new storage (``server``,
    ``database_url``; ``storage_name`` is chosen by the target's strategy when it has none).

    ``label`` names the target in the tenant's record while the move runs (never a password):
    running the move again must name the same target to continue it.
    """

    tenancy: Tenancy
    label: str
    changes: Mapping[str, Any] = field(default_factory=dict)


async def server_target(tenancy: Tenancy, name: str) -> Target:
    """A move to the server called ``name`` of ``database_servers`` (``default``: the central
    database, or ``database_url_template``), which must have room for one more tenant."""
    if tenancy.settings.operations.isolation_strategy == "row":
        raise ConfigurationError("row isolation keeps every tenant in the central database")
    pool = tenancy.servers
    server: str | None = None
    if name != DEFAULT_SERVER:
        found = pool.get(name)  # raises, naming the configured servers
        tenants = await tenancy.list_tenants(include_deleted=True)
        used = counts_by_server(tenants).get(found.name, 0)
        if used >= found.capacity:
            raise ServerFull(
                f"database server {found.name!r} is full ({used} of {found.capacity} tenants)"
            )
        server = found.name
    # A tenant's own database URL would win over its server: the move replaces it.
    return Target(tenancy, f"server {name}", {"server": server, "database_url": None})


def url_target(tenancy: Tenancy, url: str) -> Target:
    """Database isolation: move to the database ``url`` names (on any server, in the pool or
    not), created by the move; the tenant's record keeps it as its own database URL afterwards."""
    if tenancy.settings.operations.isolation_strategy != "database":
        raise ConfigurationError(
            "a target URL is for database isolation; schema isolation moves to a server of "
            "database_servers"
        )
    return Target(tenancy, f"database {redact_url(url)}", {"database_url": SecretStr(url)})


async def move_tenant(
    source: Tenancy,
    identifier: str,
    target: Target,
    *,
    drop_source: bool = False,
    progress: Progress | None = None,
) -> Tenant:
    """Move tenant ``identifier`` from ``source``'s storage to ``target``'s; see the module."""
    say = progress or (lambda _step: None)
    if not _same_store(source, target.tenancy):
        raise ConfigurationError(
            "the target configuration uses another central database: a move switches the one "
            "tenant record both share. Back the tenant up and restore it there instead."
        )
    tenant = await source.lifecycle.require(identifier)
    underway = tenant.metadata.get(MOVE_KEY)
    if tenant.status is TenantStatus.ACTIVE and underway is None:
        old = tenant.metadata.get(MOVED_FROM_KEY)
        if old is not None and old.get("to") == target.label:
            # Moved there already: what is left to do is dropping the old copy, if asked.
            if not drop_source:
                raise ConfigurationError(
                    f"tenant {identifier!r} was moved to {target.label} already; its old copy "
                    "is kept until the move is run again with --drop-source"
                )
            before = _before(tenant, old)
            dropped = await drop_old_copy(target.tenancy, tenant, src=locate(source, before))
            say("dropped the old copy")
            return dropped
        if locate(source, tenant) == _destination(target, _moved(tenant, target)):
            raise ConfigurationError(f"tenant {identifier!r} is there already")
        tenant = await _record(source, tenant, "start_move", {"to": target.label, "step": "frozen"})
        say("frozen: the tenant's requests get 503 with Retry-After")
    elif tenant.status is TenantStatus.MOVING and underway is not None:
        if underway.get("to") != target.label:
            raise InvalidTransition(
                f"tenant {identifier!r} is being moved to {underway.get('to')}, not "
                f"{target.label}: finish that move, or roll it back first"
            )
        say(f"continuing the move after step {underway.get('step')!r}")
    else:
        raise InvalidTransition(
            f"cannot move tenant {identifier!r}: it is {tenant.status.value}; only active "
            "tenants move"
        )
    src = locate(source, tenant)
    moved = _moved(tenant, target)
    dst = _destination(target, moved)
    try:
        await raise_fence(src, tenant.id)
        say("fenced: the source refuses writes")
        await _drop_partial(moved, dst)
        counts = await _copy(source, tenant, src, target, moved, dst)
        say(f"copied and verified {sum(counts.values())} rows in {len(counts)} tables")
        tenant = await _record(source, tenant, "update", {"to": target.label, "step": "copied"})
    except Exception:
        await _roll_back(source, tenant, src, moved, dst)
        say("failed: rolled back, the tenant is served from where it was")
        raise
    metadata = {k: v for k, v in tenant.metadata.items() if k not in (MOVE_KEY, MOVED_FROM_KEY)}
    metadata[MOVED_FROM_KEY] = {"to": target.label, **_jsonable(tenant)}
    switched = await source.lifecycle.change(
        tenant, "finish_move", metadata=metadata, **dict(_location(moved))
    )
    await _forget_engine(source, tenant)
    say(f"switched: the tenant is served from {target.label}")
    if drop_source:
        dropped = await drop_old_copy(target.tenancy, switched, src=src)
        say("dropped the old copy")
        return dropped
    return switched


async def rollback_move(source: Tenancy, identifier: str, target: Target) -> Tenant:
    """Undo a move left unfinished: fence down, partial copy dropped, tenant ``active`` again."""
    tenant = await source.lifecycle.require(identifier)
    if tenant.status is not TenantStatus.MOVING or MOVE_KEY not in tenant.metadata:
        raise InvalidTransition(f"tenant {identifier!r} has no move under way")
    moved = _moved(tenant, target)
    return await _roll_back(
        source, tenant, locate(source, tenant), moved, _destination(target, moved)
    )


def _before(tenant: Tenant, old: Mapping[str, Any]) -> Tenant:
    if old.get("database_url"):
        raise ConfigurationError(
            "the old copy was in a database named by its own URL, which a move does not keep: "
            "drop it by hand, or move with --drop-source"
        )
    fields = {k: v for k, v in old.items() if k in ("storage_name", "server")}
    return tenant.model_copy(update={**fields, "database_url": None})


async def drop_old_copy(serving: Tenancy, tenant: Tenant, *, src: Storage) -> Tenant:
    """Drop the fenced old copy ``src`` of a moved ``tenant`` and forget it on the record.

    ``serving`` is the configuration the tenant is served under now.
    """
    if src == locate(serving, tenant):
        raise ConfigurationError("refusing to drop the storage the tenant is served from")
    mark = owner_mark(tenant)
    if src.strategy == "row":
        await lower_fence(src, tenant.id)
        await _delete_rows(src, tenant.id)
    elif src.schema is not None:
        async with src.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                    "WHERE nspname = :name"
                ),
                {"name": src.schema},
            )
            row = found.first()
            if row is not None:
                if row[0] != mark:
                    raise ConfigurationError(f"schema {src.schema} is not this tenant's: kept")
                await conn.execute(text(f'DROP SCHEMA "{src.schema}" CASCADE'))
    else:
        url = src.url.render_as_string(hide_password=False)
        found_mark = await database_mark(url, src.name, expected=mark)
        if found_mark is not None:
            if found_mark != mark:
                raise ConfigurationError(f"database {src.name} is not this tenant's: kept")
            await drop_database(url, src.name)
    metadata = {k: v for k, v in tenant.metadata.items() if k != MOVED_FROM_KEY}
    return await serving.lifecycle.change(tenant, "update", metadata=metadata)


def _same_store(one: Tenancy, other: Tenancy) -> bool:
    return one is other or one.engine.url == other.engine.url


def _moved(tenant: Tenant, target: Target) -> Tenant:
    """The tenant's record as it will be after the move (status and metadata aside)."""
    moved = tenant.model_copy(update=dict(target.changes))
    if target.tenancy.settings.operations.isolation_strategy == "row":
        return moved.model_copy(update={"storage_name": None})
    return target.tenancy.isolation.assign_storage(moved)


def _destination(target: Target, moved: Tenant) -> Storage:
    return locate(target.tenancy, moved)


def _location(moved: Tenant) -> dict[str, Any]:
    fields = {"storage_name": moved.storage_name, "database_url": moved.database_url}
    fields["server"] = moved.server
    return fields


def _jsonable(tenant: Tenant) -> dict[str, Any]:
    """The old record's location fields, as metadata can hold them (never a URL)."""
    return {
        "storage_name": tenant.storage_name,
        "server": tenant.server,
        "database_url": tenant.database_url is not None,
    }


async def _record(source: Tenancy, tenant: Tenant, action: Any, move: dict[str, str]) -> Tenant:
    metadata = {**tenant.metadata, MOVE_KEY: move}
    metadata.pop(MOVED_FROM_KEY, None)
    return await source.lifecycle.change(tenant, action, metadata=metadata)


async def _copy(
    source: Tenancy, tenant: Tenant, src: Storage, target: Target, moved: Tenant, dst: Storage
) -> dict[str, int]:
    same_form = src.strategy == dst.strategy and src.backend == dst.backend != "sqlite"
    with tempfile.TemporaryDirectory(prefix="tenancy-move-") as tmp:
        folder = Path(tmp)
        kind, counts = await dump_storage(src, folder, rows=not same_form)
        manifest = Manifest.of(
            tenant, kind=kind, strategy=src.strategy, backend=src.backend, tables=counts
        )
        found = await load_storage(
            target.tenancy, moved, dst, manifest, folder, old_tenant_id=tenant.id
        )
    if dst.strategy == "row":
        # Tables without tenant_id are shared under row isolation: not the tenant's to copy.
        counts = {name: count for name, count in counts.items() if name in found}
    verify_counts(counts, await count_storage(dst), what=f"move of {tenant.identifier!r}")
    return counts


async def _drop_partial(moved: Tenant, dst: Storage) -> None:
    """Drop what an interrupted run of this move left at the destination (marked as ours)."""
    mark = owner_mark(moved)
    if dst.strategy == "row":
        await _delete_rows(dst, moved.id)
        return
    if dst.schema is not None:
        async with dst.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
                        "WHERE nspname = :name"
                    ),
                    {"name": dst.schema},
                )
            ).first()
            if row is not None:
                if row[0] != mark:
                    raise ConfigurationError(
                        f"schema {dst.schema} exists at the destination and is not this "
                        "tenant's: left untouched"
                    )
                await conn.execute(text(f'DROP SCHEMA "{dst.schema}" CASCADE'))
        return
    url = dst.url.render_as_string(hide_password=False)
    found = await database_mark(url, dst.name, expected=mark)
    if found is None:
        return
    if found != mark:
        raise ConfigurationError(
            f"database {dst.name} exists at the destination and is not this tenant's: left "
            "untouched"
        )
    await drop_database(url, dst.name)


async def _delete_rows(storage: Storage, tenant_id: str) -> None:
    """Delete ``tenant_id``'s rows from the shared tables (children first)."""
    async with storage.connect() as conn:
        tables = await conn.run_sync(storage_tables, scoped_only=True)
        for table in reversed(tables):
            await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))


async def _roll_back(
    source: Tenancy, tenant: Tenant, src: Storage, moved: Tenant, dst: Storage
) -> Tenant:
    if dst != src:
        await _drop_partial(moved, dst)
    await lower_fence(src, tenant.id)
    metadata = {k: v for k, v in tenant.metadata.items() if k != MOVE_KEY}
    current = await source.lifecycle.require(tenant.identifier)
    return await source.lifecycle.change(current, "finish_move", metadata=metadata)


async def _forget_engine(source: Tenancy, tenant: Tenant) -> None:
    """This process's engine for the old database goes (other processes: `DatabaseIsolation`
    keys engines by URL too, so the switched record builds a new one there)."""
    if isinstance(source.isolation, DatabaseIsolation) and tenant.storage_name is not None:
        await source.isolation.forget(tenant)

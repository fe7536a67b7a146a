"""The write fence of a move: the tenant's source storage refuses every write, in the server.

Marking the tenant ``moving`` stops new requests (503 from the lookup, in every process once the
invalidation reaches it), but a request that looked the tenant up a moment before may still be
about to write. The fence makes that impossible: a trigger on each of the tenant's tables raises
SQLSTATE ``57P03`` (which the library answers with 503, `is_unavailable`) on any insert, update,
delete or truncate. Creating a trigger waits for the transactions already writing to the table
and holds new writers back until it commits, so once the fence is up every write the source ever
acknowledged is in it: a copy taken afterwards loses nothing. Under row isolation the triggers
fire only for the tenant's own rows, so its neighbours in the shared tables keep writing.

On MariaDB the triggers ``SIGNAL`` error 1053 (server shutdown, also answered with 503), and
``lock_wait_timeout`` bounds the wait for running writers the way ``lock_timeout`` does on
PostgreSQL. MySQL allows one trigger per table and event, and a table of the app's may have one
already: there the fence is not built.

The fence stays on the source after the move (nothing can write to the stale copy) until
``--drop-source`` drops it; a rolled-back move takes it down.
"""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable
from fastapi_tenancy.transfer.rows import storage_tables
from fastapi_tenancy.transfer.storage import Storage

__all__ = ["fence_name", "lower_fence", "raise_fence"]

# A writer holding a table for longer than this makes the fence give up and try again, rather
# than keep every other writer of that table queued behind it.
_LOCK_TIMEOUT = "3s"
_ATTEMPTS = 10


def fence_name(tenant_id: str) -> str:
    """The trigger and function name of ``tenant_id``'s fence: one per tenant, so the moves of
    two tenants sharing tables (row isolation) never take down each other's."""
    return "tenancy_fence_" + hashlib.sha256(tenant_id.encode()).hexdigest()[:16]


def _function(storage: Storage, name: str) -> str:
    return f'"{storage.schema or "public"}"."{name}"'


def _require_server(storage: Storage) -> None:
    if storage.backend not in ("postgresql", "mysql"):
        raise ConfigurationError(
            f"moving a tenant needs PostgreSQL or MariaDB storage (this one is "
            f"{storage.backend}): back it up and restore it instead"
        )


async def raise_fence(storage: Storage, tenant_id: str) -> None:
    """Refuse every write to the tenant's data in ``storage``; safe to repeat."""
    _require_server(storage)
    if storage.backend == "mysql":
        await _raise_mariadb_fence(storage, tenant_id)
        return
    name = fence_name(tenant_id)
    function = _function(storage, name)
    for attempt in range(_ATTEMPTS):
        try:
            async with storage.connect() as conn:
                await conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
                await conn.execute(
                    text(
                        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger "
                        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                        "'this tenant is being moved: its writes are refused until the move "
                        "finishes' USING ERRCODE = '57P03'; END $$"
                    )
                )
                tables = await conn.run_sync(
                    storage_tables, schema=storage.schema, scoped_only=storage.tenant_id is not None
                )
                for table in tables:
                    qualified = _qualified(storage, table.name)
                    await conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}" ON {qualified}'))
                    await conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}_old" ON {qualified}'))
                    await conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}_all" ON {qualified}'))
                    if storage.tenant_id is None:
                        await conn.execute(
                            text(
                                f'CREATE TRIGGER "{name}" BEFORE INSERT OR UPDATE OR DELETE ON '
                                f"{qualified} FOR EACH ROW EXECUTE FUNCTION {function}()"
                            )
                        )
                        await conn.execute(
                            text(
                                f'CREATE TRIGGER "{name}_all" BEFORE TRUNCATE ON {qualified} '
                                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
                            )
                        )
                    else:
                        # Shared tables: only this tenant's rows, old and new, are refused.
                        tenant = storage.tenant_id.replace("'", "''")
                        await conn.execute(
                            text(
                                f'CREATE TRIGGER "{name}" BEFORE INSERT OR UPDATE ON {qualified} '
                                f"FOR EACH ROW WHEN (NEW.tenant_id = '{tenant}') "
                                f"EXECUTE FUNCTION {function}()"
                            )
                        )
                        await conn.execute(
                            text(
                                f'CREATE TRIGGER "{name}_old" BEFORE UPDATE OR DELETE ON '
                                f"{qualified} FOR EACH ROW WHEN (OLD.tenant_id = '{tenant}') "
                                f"EXECUTE FUNCTION {function}()"
                            )
                        )
            return
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code not in ("55P03", "40P01"):  # lock_not_available, deadlock_detected
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise ServiceUnavailable(
        f"could not fence the tenant's tables in {_ATTEMPTS} attempts: long transactions keep "
        "writing to them; try again"
    )


async def lower_fence(storage: Storage, tenant_id: str) -> None:
    """Take the fence down (a rolled-back move, or the new copy a dump brought it into)."""
    _require_server(storage)
    name = fence_name(tenant_id)
    if storage.backend == "mysql":
        async with storage.connect(begin=False) as conn:
            found = await conn.execute(
                text(
                    "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE :name"
                ),
                {"name": name + "\\_%"},
            )
            for (trigger,) in found.all():
                await conn.execute(text(f"DROP TRIGGER IF EXISTS `{trigger}`"))
        return
    async with storage.connect() as conn:
        tables = await conn.run_sync(
            storage_tables, schema=storage.schema, scoped_only=storage.tenant_id is not None
        )
        for table in tables:
            qualified = _qualified(storage, table.name)
            for suffix in ("", "_old", "_all"):
                await conn.execute(text(f'DROP TRIGGER IF EXISTS "{name}{suffix}" ON {qualified}'))
        await conn.execute(text(f"DROP FUNCTION IF EXISTS {_function(storage, name)}()"))


_MARIADB_EVENTS = ("INSERT", "UPDATE", "DELETE")


async def _raise_mariadb_fence(storage: Storage, tenant_id: str) -> None:
    if storage.tenant_id is not None:
        raise ConfigurationError("row isolation moves need PostgreSQL")
    name = fence_name(tenant_id)
    for attempt in range(_ATTEMPTS):
        try:
            async with storage.connect(begin=False) as conn:
                if not getattr(conn.dialect, "is_mariadb", False):
                    raise ConfigurationError(
                        "moving a tenant on MySQL is not supported (one trigger per table and "
                        "event): back it up and restore it instead"
                    )
                await conn.execute(text("SET SESSION lock_wait_timeout = 3"))
                tables = await conn.run_sync(storage_tables, schema=None)
                for table in tables:
                    for event in _MARIADB_EVENTS:
                        # Trigger names are per database: one per table and event, within 64.
                        digest = hashlib.sha256(table.name.encode()).hexdigest()[:8]
                        trigger = f"`{name}_{event[0].lower()}_{digest}`"
                        await conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
                        # ER_SERVER_SHUTDOWN (1053): answered with 503, like the freeze.
                        await conn.execute(
                            text(
                                f"CREATE TRIGGER {trigger} BEFORE {event} ON `{table.name}` "
                                "FOR EACH ROW SIGNAL SQLSTATE '08S01' SET MYSQL_ERRNO = 1053, "
                                "MESSAGE_TEXT = 'this tenant is being moved: its writes are "
                                "refused until the move finishes'"
                            )
                        )
            return
        except DBAPIError as exc:
            code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
            if code not in (1205, 1213):  # lock wait timeout, deadlock
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise ServiceUnavailable(
        f"could not fence the tenant's tables in {_ATTEMPTS} attempts: long transactions keep "
        "writing to them; try again"
    )


def _qualified(storage: Storage, table: str) -> str:
    return f'"{storage.schema}"."{table}"' if storage.schema else f'"{table}"'

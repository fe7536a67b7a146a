"""Running Alembic's ``upgrade`` command on one tenant's connection.

Alembic publishes the running migration through module-level proxies (``alembic.context`` and
``alembic.op``). Tenants migrate concurrently on one event loop, and a migration's I/O switches
between them, so two Alembic runs at once would send one tenant's operations to the other's
connection. Alembic itself therefore runs for one tenant at a time per event loop; connecting,
locking and the revision checks around it run concurrently.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Literal
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_tenancy.migrations.environment import CONNECTION_KEY, SCHEMA_KEY, TENANT_KEY
from fastapi_tenancy.migrations.targets import MigrationTarget

__all__ = ["alembic_lock", "run_alembic", "run_alembic_upgrade"]

Direction = Literal["upgrade", "downgrade"]

_alembic_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def alembic_lock() -> asyncio.Lock:
    """The lock under which Alembic runs on this event loop (its proxies are module-global)."""
    loop = asyncio.get_running_loop()
    lock = _alembic_locks.get(loop)
    if lock is None:
        lock = _alembic_locks[loop] = asyncio.Lock()
    return lock


async def run_alembic_upgrade(
    conn: AsyncConnection, config: Config, target: MigrationTarget, revision: str
) -> None:
    """``alembic upgrade <revision>`` for ``target`` inside ``conn``'s open transaction."""
    await run_alembic(conn, config, target, revision, "upgrade")


async def run_alembic(
    conn: AsyncConnection,
    config: Config,
    target: MigrationTarget,
    revision: str,
    direction: Direction,
) -> None:
    """``alembic upgrade|downgrade <revision>`` for ``target`` inside ``conn``'s transaction."""
    async with alembic_lock():
        await conn.run_sync(_run, _tenant_config(config, target), revision, direction)


def _run(connection: Connection, config: Config, revision: str, direction: Direction) -> None:
    config.attributes[CONNECTION_KEY] = connection
    if direction == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def _tenant_config(config: Config, target: MigrationTarget) -> Config:
    # A shallow copy shares the parsed ini file (read-only here) but gets its own attributes,
    # so the caller's Config is never changed and never carries a connection.
    clone = copy.copy(config)
    clone.attributes = {
        **config.attributes,
        TENANT_KEY: target.tenant,
        SCHEMA_KEY: target.schema,
    }
    return clone

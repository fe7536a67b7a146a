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
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_tenancy.migrations.environment import CONNECTION_KEY, SCHEMA_KEY, TENANT_KEY
from fastapi_tenancy.migrations.targets import MigrationTarget

__all__ = ["run_alembic_upgrade"]

_alembic_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def _alembic_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _alembic_locks.get(loop)
    if lock is None:
        lock = _alembic_locks[loop] = asyncio.Lock()
    return lock


async def run_alembic_upgrade(
    conn: AsyncConnection, config: Config, target: MigrationTarget, revision: str
) -> None:
    """``alembic upgrade <revision>`` for ``target`` inside ``conn``'s open transaction."""
    async with _alembic_lock():
        await conn.run_sync(_upgrade, _tenant_config(config, target), revision)


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    config.attributes[CONNECTION_KEY] = connection
    command.upgrade(config, revision)


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

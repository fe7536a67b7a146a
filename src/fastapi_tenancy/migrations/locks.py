"""A per-tenant migration lock that two runners, in any processes, never hold at once.

`migration_transaction` begins the transaction a tenant is migrated in and holds the tenant's
lock for all of it:

* PostgreSQL: ``pg_advisory_xact_lock(<64-bit hash>)``, released by COMMIT or ROLLBACK, so it
  works behind PgBouncer in transaction mode and is never left on a pooled connection. Advisory
  locks are per database: under database isolation it is taken in the tenant's own database.
* MariaDB/MySQL: ``GET_LOCK('fastapi_tenancy:<id>', timeout)``, a server-wide named lock held by
  the session, released with ``RELEASE_LOCK`` only after the transaction has committed, so the
  next runner sees the new revision.
* SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock up front; other writers wait for
  it (up to the busy timeout).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.migrations.errors import MigrationLockTimeout

__all__ = ["SHARED_LOCK_KEY", "advisory_key", "migration_transaction", "named_lock"]

LOCK_NAMESPACE = "fastapi_tenancy:"
# Row isolation migrates the shared tables under one lock; tenant ids are hex, never this.
SHARED_LOCK_KEY = "shared"
# MySQL refuses lock names longer than 64 characters.
_MYSQL_LOCK_NAME_MAX = 64


def advisory_key(key: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for ``key``."""
    digest = hashlib.sha256(f"{LOCK_NAMESPACE}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def named_lock(key: str) -> str:
    """``fastapi_tenancy:<key>``, or a digest of it when longer than MySQL allows."""
    name = f"{LOCK_NAMESPACE}{key}"
    if len(name) <= _MYSQL_LOCK_NAME_MAX:
        return name
    return LOCK_NAMESPACE + hashlib.sha256(key.encode()).hexdigest()[:40]


@asynccontextmanager
async def migration_transaction(
    conn: AsyncConnection, key: str, *, wait_seconds: float
) -> AsyncIterator[None]:
    """A transaction on ``conn`` holding the migration lock for ``key``; commits on success."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        async with conn.begin():
            await _postgres_lock(conn, key, wait_seconds)
            yield
    elif dialect in ("mysql", "mariadb"):
        await _mysql_lock(conn, key, wait_seconds)
        try:
            async with conn.begin():
                yield
        finally:
            await _mysql_unlock(conn, key)
    elif dialect == "sqlite":
        async with conn.begin():
            # The driver issues no BEGIN of its own before this, so it opens the transaction.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield
    else:
        raise ConfigurationError(f"migrations do not support the {dialect!r} database")


async def _postgres_lock(conn: AsyncConnection, key: str, wait_seconds: float) -> None:
    # lock_timeout bounds the wait for the advisory lock only: it is reset for the migration.
    milliseconds = max(1, int(wait_seconds * 1000))
    await conn.execute(
        text("SELECT set_config('lock_timeout', :value, true)"), {"value": f"{milliseconds}ms"}
    )
    try:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(key)})
    except Exception as exc:
        if "lock timeout" in str(exc):
            raise MigrationLockTimeout(
                f"another migration held the lock for more than {wait_seconds}s"
            ) from None
        raise
    await conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


async def _mysql_lock(conn: AsyncConnection, key: str, wait_seconds: float) -> None:
    result = await conn.execute(
        text("SELECT GET_LOCK(:name, :timeout)"), {"name": named_lock(key), "timeout": wait_seconds}
    )
    acquired = result.scalar()
    await conn.commit()  # GET_LOCK is held by the session, not by this autobegun transaction
    if acquired != 1:
        raise MigrationLockTimeout(f"another migration held the lock for more than {wait_seconds}s")


async def _mysql_unlock(conn: AsyncConnection, key: str) -> None:
    if conn.invalidated or conn.closed:
        return  # the server releases a closed session's locks itself
    try:
        await conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": named_lock(key)})
        await conn.commit()
    except SQLAlchemyError:
        # Closing the session releases its named locks; the next runner is never blocked.
        await conn.invalidate()

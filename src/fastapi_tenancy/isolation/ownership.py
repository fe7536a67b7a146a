"""Which tenant a schema or database belongs to, so provisioning can be repeated safely.

Provisioning is interrupted in the worst places: the storage exists, then the central database goes
away before the tenant is marked active. The retry must tell "the storage an earlier attempt made
for this tenant" (reuse it) from "storage that happens to have this name" (never touch it). So the
storage is marked with its tenant's id in the same step that creates it, wherever the server can
hold a comment on it:

* PostgreSQL: ``COMMENT ON SCHEMA`` in the transaction that creates the schema (atomic), and
  ``COMMENT ON DATABASE`` right after ``CREATE DATABASE``;
* MariaDB: ``CREATE DATABASE ... COMMENT`` (one statement) for schemas and databases alike;
* SQLite database files: ``PRAGMA application_id`` holds a 32-bit number derived from the mark.

MySQL keeps no comment on a database. There, and for storage made before marks existed, storage
without a mark is taken over only while it holds no table at all; anything else is refused.
"""

from __future__ import annotations

import re

from fastapi_tenancy.exceptions import TenancyError
from fastapi_tenancy.models import Tenant

__all__ = ["StorageConflict", "check_owner", "owner_mark"]

_MARK_PREFIX = "fastapi-tenancy tenant "
# Tenant ids are opaque but short; a mark that gets inlined into DDL must never need escaping.
_SAFE_MARK = re.compile(r"[A-Za-z0-9 _.-]{1,128}")


class StorageConflict(TenancyError):
    """A tenant's schema or database exists but does not belong to that tenant."""


def owner_mark(tenant: Tenant) -> str:
    """The comment that says a schema or database belongs to ``tenant``; safe to inline in DDL."""
    mark = f"{_MARK_PREFIX}{tenant.id}"
    if _SAFE_MARK.fullmatch(mark) is None:
        raise StorageConflict(f"tenant id {tenant.id!r} cannot be written as a storage mark")
    return mark


def check_owner(what: str, tenant: Tenant, mark: str | None, tables: int) -> None:
    """Raise unless storage ``what`` (marked ``mark``, with ``tables`` tables) is ``tenant``'s."""
    if mark == owner_mark(tenant):
        return
    if mark:
        raise StorageConflict(
            f"{what} of tenant {tenant.identifier!r} exists but belongs to another tenant "
            f"({mark!r}); it is left untouched"
        )
    if tables:
        raise StorageConflict(
            f"{what} of tenant {tenant.identifier!r} exists, is not marked as this tenant's and "
            f"holds {tables} table(s); it is left untouched: drop or rename it by hand"
        )

"""The tenant record: the one value carried along the request path."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from fastapi_tenancy.exceptions import InvalidTenantIdentifier

__all__ = [
    "IDENTIFIER_PATTERN",
    "Tenant",
    "TenantStatus",
    "later_than",
    "new_tenant_id",
    "validate_identifier",
]

# One DNS label: lower-case letters, digits and inner hyphens, 1-63 characters. The same shape works
# as a subdomain, a path segment and a header value, and never needs quoting.
IDENTIFIER_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def validate_identifier(value: str) -> str:
    """Return ``value`` if it is a well-formed tenant identifier, else raise.

    Every identifier is checked here before it reaches a cache, a store or SQL.
    """
    if not isinstance(value, str) or IDENTIFIER_PATTERN.fullmatch(value) is None:
        raise InvalidTenantIdentifier()
    return value


def new_tenant_id() -> str:
    """A fresh, opaque primary key: 32 hex characters."""
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


def later_than(previous: datetime) -> datetime:
    """Now, or one microsecond after ``previous`` if the clock has not passed it.

    Every write of a record moves its ``updated_at``, so compare-and-set on it never mistakes a
    changed record for the one read before.
    """
    return max(_now(), previous + timedelta(microseconds=1))


class TenantStatus(StrEnum):
    """Where a tenant is in its life. Only ``active`` tenants serve requests.

    ``pending -> provisioning -> active <-> suspended -> deleted``; ``restore`` brings a deleted
    tenant back to ``active``, and ``purge`` removes a deleted tenant for good, going through
    ``purging`` while its data is destroyed (a purge that was interrupted is finished by purging
    again; a purging tenant cannot be restored). Provisioning that keeps failing ends in
    ``failed``, from where it can be retried or deleted. ``moving`` is the short write freeze
    while a tenant's data is copied elsewhere (`fastapi_tenancy.transfer`): its requests get 503
    with ``Retry-After`` until the move finishes (``active``) or is rolled back.
    """

    PENDING = "pending"
    PROVISIONING = "provisioning"
    FAILED = "failed"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"
    PURGING = "purging"
    MOVING = "moving"


class Tenant(BaseModel):
    """An immutable tenant record.

    ``id`` is the stable key stored in tenant data (``tenant_id`` columns); ``identifier`` is what
    requests name; ``storage_name`` is the physical schema or database, chosen once at
    provisioning, so renaming a tenant never re-routes it. Changes produce a new value with
    ``tenant.model_copy(update={...})``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_tenant_id, min_length=1, max_length=64)
    identifier: str = Field(pattern=IDENTIFIER_PATTERN.pattern, max_length=63)
    name: str = ""
    status: TenantStatus = TenantStatus.ACTIVE
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    deleted_at: datetime | None = None
    # Where the tenant's data lives, fixed when it is provisioned: the schema or database name
    # under schema/database isolation, and an optional explicit database URL.
    storage_name: str | None = Field(default=None, max_length=64)
    # How many times a worker has claimed this tenant for provisioning.
    provisioning_attempts: int = Field(default=0, ge=0)
    database_url: SecretStr | None = Field(default=None, repr=False)
    # The database server of the pool (`database_servers`) the tenant was placed on, for life;
    # ``None``: the default server (the central database, or ``database_url_template``).
    server: str | None = Field(default=None, max_length=64)

    @field_validator("created_at", "updated_at", "deleted_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # Every store hands back aware UTC times, so tenants compare equal across backends;
        # a naive time is taken to be UTC already.
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

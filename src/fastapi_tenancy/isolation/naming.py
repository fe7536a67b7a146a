"""Physical names for tenant storage: chosen once, collision-free, validated before any DDL."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from pydantic import SecretStr

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import Tenant

__all__ = [
    "STORAGE_NAME_PATTERN",
    "assign_storage_name",
    "checked_storage_name",
    "choose_storage_name",
    "tenant_database_url",
]

# Lower-case letters, digits and underscores, starting with a letter: never needs quoting, and
# fits PostgreSQL's 63-byte identifier limit and MySQL's 64-character database names.
STORAGE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
_SLUG_LENGTH = 20
_DIGEST_LENGTH = 16
# Names that belong to the server itself; no tenant may ever be given or purge one.
_RESERVED = frozenset(
    {"public", "information_schema", "mysql", "performance_schema", "sys", "pg_catalog", "postgres"}
)


def choose_storage_name(prefix: str, tenant: Tenant) -> str:
    """``{prefix}{slug}_{digest}``: readable, and distinct for distinct tenants.

    The slug shows the identifier to operators (``a-b`` -> ``a_b``); the digest of the tenant's
    unique id keeps ``a-b`` and ``a__b``-like slugs apart, and the store's unique constraint on
    ``storage_name`` refuses the astronomically unlikely digest collision.
    """
    slug = tenant.identifier.replace("-", "_")[:_SLUG_LENGTH].rstrip("_")
    digest = hashlib.sha256(tenant.id.encode()).hexdigest()[:_DIGEST_LENGTH]
    return checked_storage_name(f"{prefix}{slug}_{digest}")


def checked_storage_name(name: str | None) -> str:
    """``name`` if it is safe to put in DDL, else raise."""
    if (
        name is None
        or STORAGE_NAME_PATTERN.fullmatch(name) is None
        or name in _RESERVED
        or name.startswith("pg_")
    ):
        raise ConfigurationError(f"{name!r} is not a valid tenant schema or database name")
    return name


def assign_storage_name(tenant: Tenant, prefix: str) -> Tenant:
    """``tenant`` with its storage name: the one it has (checked), or a new one for life."""
    if tenant.storage_name is not None:
        checked_storage_name(tenant.storage_name)
        return tenant
    return tenant.model_copy(update={"storage_name": choose_storage_name(prefix, tenant)})


def tenant_database_url(
    tenant: Tenant, template: str | None, overrides: Mapping[str, SecretStr] | None = None
) -> str:
    """The URL of ``tenant``'s own database.

    In order: ``overrides[identifier]`` (``TENANCY_DATABASE_URL_<TENANT>``), the explicit URL
    stored on the tenant, ``template`` with the tenant's database name.
    """
    override = None if overrides is None else overrides.get(tenant.identifier)
    if override is not None:
        return override.get_secret_value()
    if tenant.database_url is not None:
        return tenant.database_url.get_secret_value()
    if template is None:
        raise ConfigurationError(
            f"tenant {tenant.identifier!r} has no database URL and "
            "TENANCY_DATABASE_URL_TEMPLATE is not set"
        )
    return template.format(database=checked_storage_name(tenant.storage_name))

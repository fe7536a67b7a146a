"""Errors of the migration runner, and how a tenant's failure is described without secrets."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi_tenancy._secrets import mask, url_secrets
from fastapi_tenancy.exceptions import TenancyError

__all__ = ["MigrationError", "MigrationLockTimeout", "describe_error", "url_passwords"]

# SQLAlchemy appends a link to its error guide; it says nothing about the tenant.
_BACKGROUND_MARKER = "\n(Background on this error"


class MigrationError(TenancyError):
    """A migration cannot run: e.g. env.py was started outside the runner, or offline."""


class MigrationLockTimeout(MigrationError):
    """Another runner held the tenant's migration lock for longer than ``lock_timeout``."""


def url_passwords(urls: Iterable[str | None]) -> set[str]:
    """The passwords in ``urls`` in every spelling, so error messages can mask them."""
    return url_secrets(urls)


def describe_error(exc: BaseException, secrets: Iterable[str]) -> str:
    """``"Type: message"`` for a report, with every secret replaced by ``***``."""
    message = str(exc).split(_BACKGROUND_MARKER, 1)[0].strip()
    return mask(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, secrets)

"""Errors of the migration runner, and how a tenant's failure is described without secrets."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import make_url

from fastapi_tenancy.exceptions import TenancyError

__all__ = ["MigrationError", "MigrationLockTimeout", "describe_error", "url_passwords"]

# SQLAlchemy appends a link to its error guide; it says nothing about the tenant.
_BACKGROUND_MARKER = "\n(Background on this error"


class MigrationError(TenancyError):
    """A migration cannot run: e.g. env.py was started outside the runner, or offline."""


class MigrationLockTimeout(MigrationError):
    """Another runner held the tenant's migration lock for longer than ``lock_timeout``."""


def url_passwords(urls: Iterable[str | None]) -> set[str]:
    """The passwords in ``urls``, so error messages can mask them."""
    passwords: set[str] = set()
    for url in urls:
        if not url:
            continue
        try:
            password = make_url(url).password
        except Exception:  # an unparsable URL is masked whole instead
            passwords.add(url)
            continue
        if password:
            passwords.add(str(password))
    return passwords


def describe_error(exc: BaseException, secrets: Iterable[str]) -> str:
    """``"Type: message"`` for a report, with every secret replaced by ``***``."""
    message = str(exc).split(_BACKGROUND_MARKER, 1)[0].strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text

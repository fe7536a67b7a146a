"""Which failures of a tenant session mean "the tenant's storage cannot be reached right now".

They become `ServiceUnavailable` (503) where the session ends; every other error, a programming
error above all, passes through unchanged:

* a connection lost while in use (SQLAlchemy marks the error ``connection_invalidated``): the
  server restarted, the backend was terminated, the network dropped it;
* the pool handed out no connection: every connection stayed in use for
  ``database_pool_timeout`` seconds;
* opening a new connection failed: refused, unreachable host, the database dropped, too many
  clients. Drivers raise some of these unwrapped (asyncpg raises ``ConnectionRefusedError``), so
  they are recognised by where they were raised, inside the dialect's ``connect``, rather than by
  their class: an ``OSError`` of the app's own, such as a missing file, stays the app's error, and
  so does a pre-ping that fails for another reason than a lost connection (a misconfiguration).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fastapi_tenancy.exceptions import ServiceUnavailable

__all__ = ["is_unavailable", "unavailable_as_503"]


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached, rather than a failed statement."""
    if not isinstance(exc, Exception):
        return False  # cancellation and interpreter exits are never a storage failure
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return any(_is_dialect_connect(frame) for frame, _ in traceback.walk_tb(exc.__traceback__))


def _is_dialect_connect(frame: FrameType) -> bool:
    """Whether ``frame`` is `Dialect.connect`: the pool opening a new DBAPI connection."""
    return frame.f_code.co_name == "connect" and isinstance(frame.f_locals.get("self"), Dialect)


@contextmanager
def unavailable_as_503(what: str) -> Iterator[None]:
    """Re-raise an `is_unavailable` failure inside the block as `ServiceUnavailable`.

    The message names ``what`` and the failure's class only: driver messages may echo connection
    parameters. The original error stays attached as ``__cause__`` for the logs.
    """
    try:
        yield
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        raise ServiceUnavailable(f"{what} is unavailable: {type(cause).__name__}") from exc

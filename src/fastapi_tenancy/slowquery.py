"""Moved to `fastapi_tenancy.observe.slowquery`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.slowquery import MAX_LOGGED_STATEMENT, SlowQueryLog

__all__ = ["MAX_LOGGED_STATEMENT", "SlowQueryLog"]

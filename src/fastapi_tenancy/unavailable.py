"""Moved to `fastapi_tenancy.isolation.unavailable`; this path re-exports it for one release."""

from fastapi_tenancy.isolation.unavailable import (
    describe,
    is_statement_timeout,
    is_unavailable,
    unavailable_as_503,
)

__all__ = ["describe", "is_statement_timeout", "is_unavailable", "unavailable_as_503"]

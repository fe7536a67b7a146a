"""Moved to `fastapi_tenancy.isolation.inflight`; this path re-exports it for one release."""

from fastapi_tenancy.isolation.inflight import InFlight

__all__ = ["InFlight"]

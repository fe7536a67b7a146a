"""Moved to `fastapi_tenancy.observe.events`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.events import (
    Event,
    Handler,
    Hooks,
    LifecycleAction,
    RequestCompleted,
    TenantChanged,
)

__all__ = ["Event", "Handler", "Hooks", "LifecycleAction", "RequestCompleted", "TenantChanged"]

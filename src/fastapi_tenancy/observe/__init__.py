"""⑥ Observation: one `TenancyObserver` interface, and what plugs into it.

* `observer` — `TenancyObserver` (no-op defaults), `CompositeObserver`, `compose`.
* `events` — the typed events (`TenantChanged`, `RequestCompleted`) and `Hooks`, the user's
  subscriptions to them.

Imported by the request path, so it stays light: the Prometheus metrics (an optional extra), the
audit trail and the slow-query log live in their own modules of this package and are imported
only by the runtime that builds them.
"""

from __future__ import annotations

from fastapi_tenancy.observe.events import Event, Hooks, RequestCompleted, TenantChanged
from fastapi_tenancy.observe.observer import (
    CacheObserver,
    CompositeObserver,
    EngineObserver,
    TenancyObserver,
    compose,
)

__all__ = [
    "CacheObserver",
    "CompositeObserver",
    "EngineObserver",
    "Event",
    "Hooks",
    "RequestCompleted",
    "TenancyObserver",
    "TenantChanged",
    "compose",
]

"""⑥ Observation: one `TenancyObserver` interface, and what plugs into it.

* `observer` — `TenancyObserver` (no-op defaults), `CompositeObserver`, `compose`.
* `events` — the typed events (`TenantChanged`, `RequestCompleted`) and `Hooks`, the user's
  subscriptions to them.
* ``metrics``, ``labels``, ``metrics_app`` — Prometheus (the ``metrics`` extra; also importable
  as `fastapi_tenancy.metrics`).
* ``slowquery`` — the slow-query log; ``logs`` — `TenantLogFilter`; ``audit`` — the audit trail,
  which records the events it subscribes to through `Hooks`.

Imported by the request path, so this package itself stays light: only `observer` and `events`
load with it; the others are imported by the runtime that builds them.
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

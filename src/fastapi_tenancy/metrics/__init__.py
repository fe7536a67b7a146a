"""Prometheus metrics (extra ``metrics``): `TenancyMetrics` and the ``/metrics`` app.

Built when ``enable_metrics`` is on; see docs/observability.md for every metric and its labels.
The code lives in `fastapi_tenancy.observe` (``metrics``, ``labels``, ``metrics_app``); this
package is the stable import path for it.
"""

from __future__ import annotations

from fastapi_tenancy.observe.labels import NO_TENANT, OTHER_TENANTS, TenantLabels
from fastapi_tenancy.observe.metrics import OUTCOMES, TenancyMetrics, outcome_of
from fastapi_tenancy.observe.metrics_app import MetricsApp, metrics_app

__all__ = [
    "NO_TENANT",
    "OTHER_TENANTS",
    "OUTCOMES",
    "MetricsApp",
    "TenancyMetrics",
    "TenantLabels",
    "metrics_app",
    "outcome_of",
]

"""Prometheus metrics (extra ``metrics``): `TenancyMetrics` and the ``/metrics`` app.

Built when ``enable_metrics`` is on; see docs/observability.md for every metric and its labels.
"""

from __future__ import annotations

from fastapi_tenancy.metrics.app import MetricsApp, metrics_app
from fastapi_tenancy.metrics.core import OUTCOMES, TenancyMetrics, outcome_of
from fastapi_tenancy.metrics.labels import NO_TENANT, OTHER_TENANTS, TenantLabels

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

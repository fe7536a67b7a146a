"""Moved to `fastapi_tenancy.observe.metrics`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.metrics import MULTIPROC_ENV, OUTCOMES, TenancyMetrics, outcome_of

__all__ = ["MULTIPROC_ENV", "OUTCOMES", "TenancyMetrics", "outcome_of"]

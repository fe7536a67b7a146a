"""Moved to `fastapi_tenancy.observe.metrics_app`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.metrics_app import MetricsApp, metrics_app

__all__ = ["MetricsApp", "metrics_app"]

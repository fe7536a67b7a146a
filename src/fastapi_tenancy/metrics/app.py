"""Moved to `fastapi_tenancy.observe.metrics_app`; this module re-exports it until the next release.

Each name read here warns (`DeprecationWarning`); import it from the new path.
"""

from __future__ import annotations

from typing import Any

from fastapi_tenancy._deprecation import moved_attribute

_MOVED = ["MetricsApp", "metrics_app"]


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, "fastapi_tenancy.observe.metrics_app", name, _MOVED)

"""Moved to `fastapi_tenancy.observe.labels`; this module re-exports it until the next release.

Each name read here warns (`DeprecationWarning`); import it from the new path.
"""

from __future__ import annotations

from typing import Any

from fastapi_tenancy._deprecation import moved_attribute

_MOVED = ["NO_TENANT", "OTHER_TENANTS", "TenantLabels"]


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, "fastapi_tenancy.observe.labels", name, _MOVED)

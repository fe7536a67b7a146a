"""Moved to `fastapi_tenancy.observe.audit`; this package re-exports it until the next release.

Each name read here warns (`DeprecationWarning`); import it from the new path.
"""

from __future__ import annotations

from typing import Any

from fastapi_tenancy._deprecation import moved_attribute

_MOVED = [
    "DROP_REASONS",
    "AuditRecord",
    "AuditSink",
    "AuditTrail",
    "DatabaseAuditSink",
    "LoggingAuditSink",
    "SpillFile",
    "audit_table",
    "sanitised",
]


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, "fastapi_tenancy.observe.audit", name, _MOVED)

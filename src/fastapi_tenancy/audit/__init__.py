"""Moved to `fastapi_tenancy.observe.audit`; this package re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.audit import (
    DROP_REASONS,
    AuditRecord,
    AuditSink,
    AuditTrail,
    DatabaseAuditSink,
    LoggingAuditSink,
    SpillFile,
    audit_table,
    sanitised,
)

__all__ = [
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

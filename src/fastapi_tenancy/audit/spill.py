"""Moved to `fastapi_tenancy.observe.audit.spill`; this module re-exports it for one release."""

from __future__ import annotations

from fastapi_tenancy.observe.audit.spill import SpillFile, decode_line, encode_line

__all__ = ["SpillFile", "decode_line", "encode_line"]

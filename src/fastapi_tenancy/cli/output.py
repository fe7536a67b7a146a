"""How the commands print: tenant tables and records, JSON, and error lines.

A tenant's own ``database_url`` is never printed, in text or JSON; only whether it has one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi_tenancy.models import Tenant

__all__ = ["print_error", "print_json", "render_table", "tenant_record", "tenant_rows"]

PROG = "fastapi-tenancy"
TABLE_HEADERS = ("IDENTIFIER", "NAME", "STATUS", "STORAGE", "CREATED")


def print_error(message: str, *, prog: str = PROG) -> None:
    """``message`` as the command's one error line, on stderr."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def tenant_record(tenant: Tenant) -> dict[str, Any]:
    """The tenant as plain JSON-ready data, with its database URL reduced to a yes/no."""
    return {
        "id": tenant.id,
        "identifier": tenant.identifier,
        "name": tenant.name,
        "status": tenant.status.value,
        "storage": tenant.storage_name,
        "has_database_url": tenant.database_url is not None,
        "server": tenant.server,
        "metadata": tenant.metadata,
        "created_at": _timestamp(tenant.created_at),
        "updated_at": _timestamp(tenant.updated_at),
        "deleted_at": _timestamp(tenant.deleted_at),
    }


def tenant_rows(tenants: Sequence[Tenant]) -> list[tuple[str, ...]]:
    return [
        (
            tenant.identifier,
            tenant.name,
            tenant.status.value,
            tenant.storage_name or "-",
            tenant.created_at.strftime("%Y-%m-%d %H:%M:%SZ"),
        )
        for tenant in tenants
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, sized to their widest cell."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )

"""How the commands show the pool of database servers: tenants per server against capacity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi_tenancy.cli.output import tenant_rows
from fastapi_tenancy.isolation.placement import DEFAULT_SERVER, ServerPool, server_label
from fastapi_tenancy.models import Tenant

__all__ = ["server_rows", "servers_summary", "usage_line"]


def server_rows(tenants: Sequence[Tenant]) -> list[tuple[str, ...]]:
    """`tenant_rows` with each tenant's server (``default`` when it has none) last."""
    return [
        (*row, server_label(tenant))
        for row, tenant in zip(tenant_rows(tenants), tenants, strict=True)
    ]


def usage_line(pool: ServerPool, counts: Mapping[str, int]) -> list[str]:
    """``name: used/capacity`` for each server, the default server first when it has tenants."""
    parts = []
    if counts.get(DEFAULT_SERVER):
        parts.append(f"{DEFAULT_SERVER}: {counts[DEFAULT_SERVER]}")
    parts += [f"{s.name}: {counts.get(s.name, 0)}/{s.capacity}" for s in pool.servers]
    unknown = sorted(set(counts) - {DEFAULT_SERVER, *pool.names})
    parts += [f"{name}: {counts[name]} (not configured)" for name in unknown]
    return parts


def servers_summary(pool: ServerPool, counts: Mapping[str, int]) -> str:
    """One line: tenants (in every status until purged) per server, against its capacity."""
    return "tenants per server: " + ", ".join(usage_line(pool, counts))

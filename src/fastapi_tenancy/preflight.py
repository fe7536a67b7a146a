"""Start-up checks for mistakes that no single setting shows, each failing in one line.

The middleware runs them at lifespan startup and ``fastapi-tenancy doctor`` runs the second:

- a route that needs a tenant under an excluded path, where it could never get one;
- tenants whose recorded storage does not fit the configured isolation strategy (the strategy
  was switched under an existing deployment), which every request of theirs would fail on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from sqlalchemy import MetaData
from starlette.routing import Mount

from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.dependencies import get_current_tenant, get_tenant_session
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.exclusions import SUBTREE, PathExclusions
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.models import Tenant

__all__ = [
    "STORAGE_DOCS",
    "excluded_tenant_routes",
    "missing_tables",
    "missing_tables_for",
    "narrow_exclusions",
    "storage_mismatch",
]

STORAGE_DOCS = "docs/isolation.md#changing-the-isolation-strategy"
TENANT_DEPENDENCIES: dict[Callable[..., Any], str] = {
    get_tenant_session: "get_tenant_session",
    get_current_tenant: "get_current_tenant",
}
SHOWN_TENANTS = 5
FASTAPI_DOCS_URLS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def excluded_tenant_routes(app: Any, excluded_paths: Sequence[str]) -> list[str]:
    """A line for each route of ``app`` that needs a tenant but lies under an excluded path."""
    problems = []
    for method, path, needs in _tenant_routes(getattr(app, "routes", ()), "", None):
        entries = [entry for entry in excluded_paths if PathExclusions([entry]).matches(path)]
        if needs is not None and entries:
            problems.append(
                f"route {method} {path} needs a tenant ({needs}) but TENANCY_EXCLUDED_PATHS "
                f"serves it without one ({entries[0]}): move the route, or narrow the entry"
            )
    return problems


def narrow_exclusions(app: Any, excluded_paths: Sequence[str]) -> list[str]:
    """A line for each exact entry with tenant-free routes below it, which it does not cover.

    ``/health`` excludes ``/health`` only; probes at ``/health/live`` would need a tenant. FastAPI's
    own documentation URLs are exact on purpose and never reported.
    """
    problems = []
    routes = list(_tenant_routes(getattr(app, "routes", ()), "", None))
    for entry in excluded_paths:
        if entry.endswith(SUBTREE) or entry == "/" or entry in FASTAPI_DOCS_URLS:
            continue
        below = [
            f"{method} {path}"
            for method, path, needs in routes
            if needs is None
            and path.startswith(entry + "/")
            and not PathExclusions(excluded_paths).matches(path)
        ]
        if below:
            problems.append(
                f"TENANCY_EXCLUDED_PATHS entry {entry} matches that path only, so "
                f"{', '.join(below[:3])} need{'s' if len(below) == 1 else ''} a tenant; write "
                f"{entry}{SUBTREE} to serve them without one"
            )
    return problems


def _tenant_routes(
    routes: Iterable[Any], prefix: str, inherited: str | None
) -> Iterator[tuple[str, str, str | None]]:
    """``(methods, path, tenant dependency or None)`` for every endpoint below ``routes``."""
    for route in routes:
        if isinstance(route, APIRoute):
            needs = inherited or _tenant_dependency(route.dependant)
            yield ",".join(sorted(route.methods or ())), prefix + route.path, needs
        elif isinstance(route, APIWebSocketRoute):
            yield "WEBSOCKET", prefix + route.path, inherited or _tenant_dependency(route.dependant)
        elif isinstance(route, Mount):
            yield from _tenant_routes(getattr(route.app, "routes", ()), prefix + route.path, None)
        elif hasattr(route, "original_router") and hasattr(route, "include_context"):
            # FastAPI >= 0.130 keeps an included router as one entry, with its prefix and its
            # dependencies beside it, instead of copying its routes into the app.
            context = route.include_context
            needs = inherited
            for depends in context.dependencies:
                needs = needs or _depends_on_tenant(depends.dependency)
            yield from _tenant_routes(route.original_router.routes, prefix + context.prefix, needs)


def _depends_on_tenant(call: Callable[..., Any] | None) -> str | None:
    if call is None:
        return None
    return TENANT_DEPENDENCIES.get(call) or _tenant_dependency(get_dependant(path="", call=call))


def _tenant_dependency(dependant: Dependant) -> str | None:
    for dependency in dependant.dependencies:
        name = TENANT_DEPENDENCIES.get(dependency.call) if dependency.call else None
        if name is None:
            name = _tenant_dependency(dependency)
        if name is not None:
            return name
    return None


def storage_mismatch(strategy: str, tenants: Sequence[Tenant]) -> str | None:
    """Why ``strategy`` cannot serve some of ``tenants`` (their storage was made by another)."""
    if strategy == "row":
        stranded = [tenant for tenant in tenants if tenant.storage_name is not None]
        made_by = "schema or database isolation: their data is in a schema or database of its own"
        back = "schema (or database)"
    else:
        stranded = [tenant for tenant in tenants if tenant.storage_name is None]
        made_by = f"row isolation: they have no {strategy} of their own"
        back = "row"
    if not stranded:
        return None
    names = ", ".join(tenant.identifier for tenant in stranded[:SHOWN_TENANTS])
    if len(stranded) > SHOWN_TENANTS:
        names += f" and {len(stranded) - SHOWN_TENANTS} more"
    return (
        f"TENANCY_ISOLATION_STRATEGY is {strategy!r} but {len(stranded)} tenant(s) ({names}) "
        f"were created under {made_by}; set TENANCY_ISOLATION_STRATEGY back to {back}, or move "
        f"them to the new strategy as {STORAGE_DOCS} describes"
    )


def missing_tables(config: TenancyConfig) -> str | None:
    """Why a tenant provisioned with ``config`` would get no tables, or ``None``.

    A tenant without tables is served, and every request of its answers 500 ("no such table").
    """
    return missing_tables_for(config.tenant_metadata, config.tenant_tables)


def missing_tables_for(
    spec: str | MetaData | None, tenant_tables: Literal["metadata", "none"]
) -> str | None:
    """`missing_tables` from the two settings it reads: ``tenant_metadata``, ``tenant_tables``."""
    try:
        metadatas = TenantTables(spec).metadatas()
    except ConfigurationError as exc:
        # Always an error: purging and row-level security read the metadata too.
        return (
            f"{exc}; it is imported from the working directory and PYTHONPATH, so run from your "
            "project's root or add it to PYTHONPATH"
        )
    if tenant_tables == "none" or any(m.tables for m in metadatas):
        return None
    if spec is None:
        known = "TENANCY_TENANT_METADATA is not set and no TenantScoped model is imported"
    else:
        known = f"TENANCY_TENANT_METADATA {spec!r} holds no table"
    return (
        f"it would get no tables: {known}; set TENANCY_TENANT_METADATA to your models' metadata "
        "('myapp.models:Base.metadata'), or TENANCY_TENANT_TABLES=none when Alembic "
        "creates them (or the app keeps none)"
    )

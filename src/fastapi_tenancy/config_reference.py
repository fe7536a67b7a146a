"""The configuration reference, generated from `TenancyConfig`: every field, its env var, default
and effect (the field's ``description``).

``fastapi-tenancy config reference`` prints it; ``docs/configuration.md`` holds it below a marker,
and a test fails when the page and the model disagree. Off the request path.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticUndefined

from fastapi_tenancy.config import TenancyConfig

__all__ = ["GROUPS", "MARKER", "config_reference", "replace_reference"]

MARKER = (
    "<!-- Generated from TenancyConfig by `fastapi-tenancy config reference`; edit the field "
    "descriptions in src/fastapi_tenancy/config.py, then run "
    "`fastapi-tenancy config reference --write docs/configuration.md`. -->"
)

# (section title, prose under the title, fields in the order shown, prose after the table)
GROUPS: list[tuple[str, str, list[str], str]] = [
    (
        "Central database",
        "",
        [
            "database_url",
            "database_pool_size",
            "database_max_overflow",
            "database_pool_timeout",
            "database_pool_recycle",
            "database_pool_pre_ping",
            "database_echo",
            "database_pgbouncer",
            "statement_timeout",
        ],
        "With SQLite, the library turns on WAL mode, foreign keys and a 30 s busy timeout for "
        "every\nconnection; an in-memory SQLite URL uses one shared connection.",
    ),
    (
        "Resolution",
        "",
        [
            "resolution_strategy",
            "tenant_header_name",
            "domain_suffix",
            "custom_domains",
            "trusted_proxies",
            "tenant_path_prefix",
            "jwt_secret",
            "jwt_algorithm",
            "jwt_tenant_claim",
            "jwt_audience",
            "jwt_issuer",
            "jwt_leeway",
            "jwt_jwks_url",
            "jwt_jwks_refresh_interval",
            "jwt_jwks_min_refresh_interval",
            "excluded_paths",
        ],
        "",
    ),
    (
        "Lookup cache",
        "See [Caching and invalidation](caching.md) for the layers and what happens when Redis is "
        "down.",
        ["cache_enabled", "cache_ttl", "cache_negative_ttl", "cache_max_size", "cache_key_prefix"],
        "",
    ),
    (
        "Redis",
        "One Redis (a server, a Sentinel group or a Cluster) shares the lookup cache, its "
        "invalidations and the rate-limit counts between processes. See "
        "[Scaling out](scaling-out.md) for the topologies.",
        ["redis_url", "redis_timeout"],
        "",
    ),
    (
        "Rate limiting",
        "",
        [
            "enable_rate_limiting",
            "rate_limit_per_minute",
            "rate_limit_plans",
            "rate_limit_fail_closed",
        ],
        "",
    ),
    (
        "Isolation and lifecycle",
        "",
        [
            "isolation_strategy",
            "tenant_metadata",
            "tenant_tables",
            "alembic_config",
            "central_migrations",
            "row_level_security",
            "database_url_template",
            "database_servers",
            "tenant_database_urls",
            "max_cached_engines",
            "tenant_pool_size",
            "database_connection_budget",
            "schema_binding",
            "shared_schema",
            "schema_prefix",
            "enable_audit_logging",
            "audit_spill_path",
            "audit_flush_timeout",
            "enable_soft_delete",
            "shutdown_timeout",
        ],
        "",
    ),
    (
        "Observability",
        "See [Observability](observability.md) for the metrics, the `/metrics` app and the log "
        "filter.",
        [
            "enable_metrics",
            "metrics_tenant_label",
            "metrics_tenant_label_limit",
            "slow_query_threshold_ms",
        ],
        "",
    ),
    (
        "Edge routing",
        "See [Edge routing with Traefik](deployment.md#edge-routing-with-traefik).",
        [
            "edge_enabled",
            "edge_redis_url",
            "edge_root_key",
            "edge_router_prefix",
            "edge_service",
            "edge_service_urls",
            "edge_entrypoints",
            "edge_cert_resolver",
            "edge_sync_on_start",
        ],
        "",
    ),
]

# Defaults whose value says less than a sentence would.
DEFAULT_TEXT = {"tenant_metadata": "all `TenantScoped` models"}


def config_reference() -> str:
    """The reference as Markdown: one section per group, one table row per field."""
    fields = TenancyConfig.model_fields
    listed = [name for _, _, names, _ in GROUPS for name in names]
    missing = sorted(set(fields) - set(listed))
    if missing or len(listed) != len(set(listed)):
        raise RuntimeError(f"every TenancyConfig field belongs to one group; missing: {missing}")
    parts = []
    for title, before, names, after in GROUPS:
        parts.append(f"## {title}\n")
        if before:
            parts.append(f"{before}\n")
        rows = ["| field | env var | default | effect |", "|---|---|---|---|"]
        for name in names:
            description = fields[name].description
            if not description:
                raise RuntimeError(f"TenancyConfig.{name} has no description")
            env = f"TENANCY_{name.upper()}"
            rows.append(f"| `{name}` | `{env}` | {_default(name)} | {description} |")
        parts.append("\n".join(rows) + "\n")
        if after:
            parts.append(f"{after}\n")
    return "\n".join(parts)


def replace_reference(page: str) -> str:
    """``page`` with everything after `MARKER` replaced by a fresh reference."""
    head, found, _ = page.partition(MARKER)
    if not found:
        raise ValueError("the page has no generated-reference marker")
    return f"{head}{MARKER}\n\n{config_reference()}"


def _default(name: str) -> str:
    if name in DEFAULT_TEXT:
        return DEFAULT_TEXT[name]
    field = TenancyConfig.model_fields[name]
    value: Any = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if value is None or value == ():
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`" + ",".join(str(item) for item in value) + "`"
    if value == "":
        return '`""`'
    return f"`{value}`"

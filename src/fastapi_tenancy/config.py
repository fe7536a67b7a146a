"""`TenancyConfig`: every setting of the library, read from ``TENANCY_*`` environment variables.

This is the only module that reads the environment. Settings that cannot work together are
rejected here, when the config is built, with a message that says what to change.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.exclusions import normalise_exclusion
from fastapi_tenancy.isolation.placement import DEFAULT_SERVER, DatabaseServer

__all__ = ["ResolutionStrategy", "TenancyConfig", "describe_validation_error", "env_name"]

logger = logging.getLogger("fastapi_tenancy")

ENV_PREFIX = "TENANCY_"
# TENANCY_* names that are not settings: the test suite's service URLs and knobs, the soak test's
# and the benchmarks' (documented in docs/testing.md); they never count as typos.
NON_SETTING_PREFIXES = ("TENANCY_TEST_", "TENANCY_SOAK_", "TENANCY_BENCH_")
# TENANCY_DATABASE_URL_<TENANT>: one tenant's database URL (`tenant_database_urls`).
TENANT_URL_PREFIX = "TENANCY_DATABASE_URL_"
# The async driver this library runs on for each database; URLs must name it.
ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
    "sqlite": "sqlite+aiosqlite",
}

ResolutionStrategy = Literal["header", "subdomain", "jwt", "path"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def env_name(field: str) -> str:
    """The environment variable of the setting ``field``: ``TENANCY_<FIELD>``."""
    return ENV_PREFIX + field.upper()


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each failing setting's variable and why, never its value (maybe secret)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        where = env_name(field) if field in TenancyConfig.model_fields else (field or "config")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "invalid configuration: " + "; ".join(parts)


def _suggestion(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_environment(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> list[str]:
    """A line for each ``TENANCY_*`` name in ``environ`` or ``dotenv`` that is no setting."""
    known = {env_name(field) for field in TenancyConfig.model_fields}
    problems = []
    for source, names in (("environment variable", environ), (".env entry", dotenv)):
        for name in sorted(names):
            upper = name.upper()
            if not upper.startswith(ENV_PREFIX) or upper.startswith(NON_SETTING_PREFIXES):
                continue
            if upper not in known and not _is_tenant_url_variable(upper, known):
                problems.append(
                    f"{source} {name} is not a fastapi-tenancy setting and is ignored"
                    + _suggestion(upper, known)
                )
    return problems


def tenant_url_variable(identifier: str) -> str:
    """The variable holding ``identifier``'s database URL: ``acme-eu`` -> ``..._URL_ACME_EU``.

    Identifiers are lower-case letters, digits and hyphens, so upper case with ``_`` for ``-``
    names each one by exactly one variable.
    """
    return TENANT_URL_PREFIX + identifier.upper().replace("-", "_")


def _is_tenant_url_variable(upper: str, known: set[str]) -> bool:
    # TENANCY_DATABASE_URL_TEMPLATE is a setting, not the URL of a tenant named "template".
    return upper.startswith(TENANT_URL_PREFIX) and upper not in known


def _tenant_urls(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> dict[str, str]:
    """``TENANCY_DATABASE_URL_<TENANT>`` entries as identifier -> URL (the environment wins)."""
    known = {env_name(field) for field in TenancyConfig.model_fields}
    found: dict[str, str] = {}
    for source in (dotenv, environ):
        for name, value in source.items():
            upper = name.upper()
            if value is None or not _is_tenant_url_variable(upper, known):
                continue
            found[upper.removeprefix(TENANT_URL_PREFIX).lower().replace("_", "-")] = value
    return found


def _env_file_entries(env_file: Any) -> dict[str, str | None]:
    files = [env_file] if isinstance(env_file, str | os.PathLike) else list(env_file or ())
    entries: dict[str, str | None] = {}
    for path in files:
        if Path(path).is_file():
            entries.update(dotenv_values(path))
    return entries


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot serve as this library's async SQLAlchemy URL, or ``None``."""
    scheme = url.split("://", 1)[0]
    expected = ASYNC_DRIVERS.get(scheme.split("+", 1)[0])
    try:
        dialect = make_url(url.replace("{database}", "db")).get_dialect(_is_async=True)
    except Exception:
        return (
            "not a supported database URL; use postgresql+asyncpg://, mysql+aiomysql:// or "
            "sqlite+aiosqlite://"
        )
    if "+" not in scheme and expected is not None:
        return f"{scheme}:// names no driver; use {expected}://"
    if not dialect.is_async:
        fix = f"use {expected}://" if expected else "name an async driver"
        return f"{dialect.driver} is a synchronous driver; {fix}"
    return None


def _split_csv(value: Any) -> Any:
    # Lists come from the environment as "a,b,c"; JSON lists are accepted too.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class TenancyConfig(BaseSettings):
    """Settings for `Tenancy` and `TenancyMiddleware`.

    ``TenancyConfig()`` reads ``TENANCY_*`` variables (and a ``.env`` file if present); keyword
    arguments override them::

        TenancyConfig(resolution_strategy="subdomain", domain_suffix="example.com")
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        arbitrary_types_allowed=True,
        validate_default=True,
    )

    # Central database: the tenants table, and tenant data under row isolation.
    database_url: str = Field(
        default="sqlite+aiosqlite:///./tenancy.db",
        repr=False,
        description=(
            "the central database: the `tenancy_tenants` table, and tenant rows under row "
            "isolation. `postgresql+asyncpg://…`, `mysql+aiomysql://…` and `sqlite+aiosqlite://…` "
            "are supported. Never printed with its password."
        ),
    )
    database_pool_size: int = Field(
        default=5,
        ge=1,
        description="connections kept open per process",
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        description=(
            "extra connections allowed under load; a process holds at most `pool_size + "
            "max_overflow`"
        ),
    )
    database_pool_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds a request waits for a free connection",
    )
    database_pool_recycle: int = Field(
        default=1800,
        ge=-1,
        description="seconds after which a connection is replaced (`-1`: never)",
    )
    database_pool_pre_ping: bool = Field(
        default=True,
        description=(
            "on checkout, replace a connection the server has closed (seen without a round "
            "trip) and ping one idle in the pool for over a second, so a restarted server or an "
            "idle timeout costs no failed request; a busy pool pays no ping"
        ),
    )
    database_echo: bool = Field(
        default=False,
        description="log every SQL statement (development only)",
    )
    statement_timeout: float | None = Field(
        default=None,
        gt=0,
        description=(
            "seconds a statement on the central or a tenant database may run before it is "
            "stopped and the request answers `503` (unset: no limit). PostgreSQL: asyncpg's "
            "`command_timeout` (client side: also ends a wait on a stalled network, works behind "
            "PgBouncer, no extra round trip); MariaDB: `max_statement_time`, MySQL: "
            "`max_execution_time` (SELECT only), set once per new connection. Not for SQLite"
        ),
    )
    database_pgbouncer: bool = Field(
        default=False,
        description=(
            "the PostgreSQL URL points at PgBouncer in transaction pooling mode: asyncpg's "
            "statement caches are turned off and every prepared statement gets a unique name, as "
            "PgBouncer requires"
        ),
    )

    # ① Resolution: one strategy, or several tried in order ("header,jwt").
    resolution_strategy: Annotated[tuple[ResolutionStrategy, ...], NoDecode] = Field(
        default=("header",),
        description=(
            "`header`, `subdomain`, `jwt` or `path`, or several (`header,jwt`): any of them may "
            "name the tenant, and those that do must agree"
        ),
    )
    tenant_header_name: str = Field(
        default="X-Tenant-ID",
        min_length=1,
        description="header read by the `header` strategy",
    )
    domain_suffix: str | None = Field(
        default=None,
        description="required by `subdomain`: `example.com` makes `acme.example.com` name `acme`",
    )
    custom_domains: bool = Field(
        default=True,
        description=(
            "`subdomain` also serves a tenant's own host names (`acme.com`), added with "
            "`fastapi-tenancy tenants domains add`; a host outside `domain_suffix` is looked up in "
            "the `tenancy_domains` table (through the cache) — see [custom domains]"
            "(resolution.md#custom-domains)"
        ),
    )
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        default=(),
        description=(
            "IPv4/IPv6 addresses or CIDR networks whose `Forwarded: host=` and `X-Forwarded-Host` "
            "are believed (the last value only); from any other peer they are ignored"
        ),
    )
    tenant_path_prefix: str = Field(
        default="",
        description=(
            "the `path` strategy reads `{prefix}/{tenant}/…`; the app's routes never see that part"
        ),
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        description=(
            "required by `jwt`: the HMAC secret (at least 32/48/64 bytes for HS256/384/512, not a "
            "placeholder such as `change-me…`) or, for RS/PS/ES/EdDSA, the PEM public key"
        ),
    )
    jwt_algorithm: str = Field(
        default="HS256",
        description="the only algorithm accepted; `none` is never accepted",
    )
    jwt_tenant_claim: str = Field(
        default="tenant",
        min_length=1,
        description="claim that holds the tenant identifier",
    )
    jwt_audience: str | None = Field(
        default=None,
        description="when set, tokens must carry this `aud`",
    )
    jwt_issuer: str | None = Field(
        default=None,
        description="when set, tokens must carry this `iss`",
    )
    jwt_leeway: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="seconds of clock skew tolerated on `exp`, `nbf` and `iat` (0 to 300)",
    )
    # Asymmetric tokens can name their key by "kid" in a JWKS instead of one pinned public key.
    jwt_jwks_url: str | None = Field(
        default=None,
        description=(
            "instead of `jwt_secret`, for asymmetric algorithms: the issuer's JWK Set (`https://`),"
            " each token choosing its key by `kid`; fetched at startup"
        ),
    )
    jwt_jwks_refresh_interval: float = Field(
        default=300.0,
        gt=0,
        description="seconds between background refreshes of the JWK Set",
    )
    jwt_jwks_min_refresh_interval: float = Field(
        default=10.0,
        ge=0,
        description=(
            "an unknown `kid` refreshes the JWK Set early, at most once per this many seconds"
        ),
    )
    excluded_paths: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(
            "/health/*",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
            "/openapi.json",
        ),
        description=(
            "paths served without a tenant: an entry matches that path only (`/docs`, never "
            "`/docs/{id}`); one ending in `/*` matches the path and everything below it "
            "(`/health/*` covers `/health/live`, never `/healthz`). Start-up refuses a route that "
            "needs a tenant under an excluded path"
        ),
    )

    # ② Lookup: in-process LRU+TTL cache (L1) in front of Redis (L2, when redis_url is set) and
    # the store; invalidations travel over Redis pub/sub.
    cache_enabled: bool = Field(
        default=True,
        description=(
            "keep resolved tenants in an in-process LRU+TTL cache (and in Redis when `redis_url` is"
            " set), so a warm request runs no tenant query — see [caching](caching.md)"
        ),
    )
    cache_ttl: float = Field(
        default=60.0,
        gt=0,
        description=(
            "seconds a tenant stays cached; lifecycle calls invalidate it at once in this process, "
            "and through Redis pub/sub in every other"
        ),
    )
    cache_negative_ttl: float = Field(
        default=5.0,
        ge=0,
        description="seconds an unknown identifier stays cached as unknown (`0`: not cached)",
    )
    cache_max_size: int = Field(
        default=10_000,
        ge=1,
        description="entries kept in each process's memory; the least recently used go first",
    )
    cache_key_prefix: str = Field(
        default="fastapi_tenancy",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description=(
            "prefix of the Redis keys and of the invalidation channel (`<prefix>:tenant:<id>`, "
            "`<prefix>:invalidate`); give each app sharing one Redis its own"
        ),
    )

    # The Redis that shares ② the cache and ③ the rate-limit counts between processes.
    redis_url: SecretStr | None = Field(
        default=None,
        repr=False,
        description=(
            "`redis://…`: shares the tenant cache (L2), its invalidations and the rate-limit counts"
            " between every process and host (otherwise each process caches and counts alone). "
            "`rediss://` and `unix://` work too, and so do Sentinel "
            "(`redis+sentinel://host:26379,host2:26379/mymaster[/db]`) and Cluster "
            "(`redis+cluster://host:6379,host2:6379`); see [Scaling out](scaling-out.md). "
            "Never printed."
        ),
    )
    redis_timeout: float = Field(
        default=1.0,
        gt=0,
        description=(
            "seconds a Redis command (cache or rate limit) may take before it counts as failed; the"
            " cache then falls back to memory and the store"
        ),
    )
    enable_rate_limiting: bool = Field(
        default=False,
        description=(
            "count each tenant's HTTP requests in a moving one-minute window; over the limit "
            "answers `429` with `Retry-After` (seconds until a slot frees) and `RateLimit-*` "
            "headers, which admitted responses carry too"
        ),
    )
    rate_limit_per_minute: int = Field(
        default=600,
        ge=1,
        description=(
            'the default limit; a tenant\'s metadata `{"rate_limit_per_minute": N}` overrides it'
        ),
    )
    rate_limit_plans: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description=(
            'limits per plan as JSON (`{"pro": 6000}`), for tenants whose metadata has `{"plan": '
            '"pro"}`'
        ),
    )
    rate_limit_fail_closed: bool = Field(
        default=True,
        description=(
            "when the Redis counter cannot be reached: `true` answers `503`, `false` lets requests "
            "through (logged and counted)"
        ),
    )

    # ⑤ Isolation.
    isolation_strategy: Literal["row", "schema", "database"] = Field(
        default="row",
        description=(
            "how tenant data is kept apart: `row` (shared tables filtered by `tenant_id`; every "
            "database), `schema` (a schema per tenant on PostgreSQL, a database per tenant on the "
            "central MariaDB/MySQL server) or `database` (a database per tenant, anywhere); see "
            "[Isolation](isolation.md)"
        ),
    )
    tenant_metadata: str | MetaData | None = Field(
        default=None,
        description=(
            "the tables `create_tenant` creates (in the shared tables, or in the tenant's schema) "
            'and `purge_tenant` removes, as `"package.module:Base.metadata"` or a `MetaData`'
        ),
    )
    tenant_tables: Literal["metadata", "none"] = Field(
        default="metadata",
        description=(
            "`metadata`: creating or provisioning a tenant creates its tables from "
            "`tenant_metadata` (or the imported `TenantScoped` models), and a tenant that would "
            "get none is refused. `none`: a tenant may get no tables from the library, because "
            "Alembic creates them (`fastapi-tenancy worker --migrate`, `migrate upgrade`; leave "
            "`tenant_metadata` empty) or the app keeps none"
        ),
    )
    alembic_config: str | None = Field(
        default=None,
        description=(
            "Path of the app's `alembic.ini` (tenant revisions). Set: Alembic owns the tenant "
            "tables and every new tenant is created already at head (`tenant_tables` becomes "
            "`none`): under schema and database isolation from a template kept at the current "
            "heads, copied per tenant (`CREATE DATABASE ... TEMPLATE` on PostgreSQL), or by "
            "running the revisions in the new storage when the template cannot be copied "
            "faithfully. Row isolation has nothing to template: run `migrate upgrade`. See "
            "[Migrations](migrations.md#new-tenants)"
        ),
    )
    central_migrations: Literal["auto", "check"] = Field(
        default="auto",
        description=(
            "The library's own tables in the central database (tenants, domains, audit) have an "
            "Alembic history of their own. `auto`: start brings them to this release's revision "
            "under a lock (one process upgrades, the others wait and find it done). `check`: "
            "start changes nothing and fails if they are behind; run `fastapi-tenancy migrate "
            "central` as a release step (for database roles without DDL rights)"
        ),
    )
    # Row isolation on PostgreSQL: policies enforce the tenant on raw SQL too.
    row_level_security: bool = Field(
        default=False,
        description=(
            "`row` isolation on PostgreSQL only: every tenant session sets "
            "`fastapi_tenancy.tenant_id` transaction-locally at each `BEGIN`, for the tenant "
            "tables' row-level security policies (created by `fastapi-tenancy rls enable`), so raw "
            "SQL is confined too; start-up refuses a superuser, `BYPASSRLS` or table-owner role and"
            " tables without the policy. See "
            "[Isolation](isolation.md#row-level-security-postgresql)"
        ),
    )
    schema_prefix: str = Field(
        default="tenant_",
        pattern=r"^[a-z][a-z0-9_]{0,19}$",
        description=(
            "start of every tenant schema or database name (`schema` and `database` isolation) "
            "(`[a-z][a-z0-9_]`, at most 20 characters); the full name is chosen once at creation "
            "and stored on the tenant"
        ),
    )
    schema_binding: Literal["auto", "search_path", "translate_map"] = Field(
        default="auto",
        description=(
            "how a `schema` session reaches its schema: `search_path` (a transaction-local "
            "`search_path` holding only the tenant's schema; PostgreSQL), `translate_map` (every "
            "table qualified with the tenant's schema at execution time), or `auto`: `search_path` "
            "on PostgreSQL, `translate_map` on MariaDB/MySQL. See [Isolation](isolation.md) for the"
            " measurements"
        ),
    )
    shared_schema: str = Field(
        default="public",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description=(
            "`schema` isolation on PostgreSQL: the schema holding the shared tables (models "
            "without `TenantScoped`), created once and searched after the tenant's own schema; "
            "on MariaDB/MySQL the shared tables live in `database_url`'s database. See "
            "[Shared tables](isolation.md#shared-tables)"
        ),
    )
    tenant_database_urls: dict[str, SecretStr] = Field(
        default_factory=dict,
        repr=False,
        description=(
            "`database` isolation: tenants' database URLs by identifier, read from "
            "`TENANCY_DATABASE_URL_<TENANT>` variables (the identifier in upper case, `-` "
            "written `_`: `TENANCY_DATABASE_URL_ACME_EU` for `acme-eu`; the identifier `template`"
            " cannot be named so). They take precedence over the URL stored on the tenant and "
            "`database_url_template`, and name databases the operator made: never created or "
            "dropped. `fastapi-tenancy doctor` warns about a variable naming no tenant. Never "
            "printed. See [Isolation](isolation.md#database-urls-from-the-environment)"
        ),
    )
    # Database per tenant: where each tenant's database is, and how many engines stay open.
    database_url_template: str | None = Field(
        default=None,
        repr=False,
        description=(
            "`database` isolation: each tenant's URL, with a `{database}` placeholder for the "
            "tenant's database name (`postgresql+asyncpg://app@db:5432/{database}`, "
            "`sqlite+aiosqlite:///./tenants/{database}.db`); a tenant created with an explicit "
            "`database_url` uses that instead. Never printed."
        ),
    )
    database_servers: tuple[DatabaseServer, ...] = Field(
        default=(),
        repr=False,
        description=(
            "`schema` and `database` isolation over several database servers, as JSON: "
            '`[{"name": "pg1", "url": "postgresql+asyncpg://app@db1/app", "capacity": 500}, …]`. '
            "New tenants go to the server with the lowest share of its capacity in use (or the "
            "one `tenants create --server` names), which is recorded on the tenant; a full server "
            "takes none. Tenants without a server stay on the central database or "
            "`database_url_template`. See [Scaling out](scaling-out.md#a-pool-of-database-servers)"
            ". URLs are never printed."
        ),
    )
    max_cached_engines: int = Field(
        default=100,
        ge=1,
        description=(
            "`database` isolation: tenant engines kept open; the least recently used idle one is "
            "disposed (in the background) when another is needed, and an engine in use is never "
            "disposed"
        ),
    )
    tenant_pool_size: int = Field(
        default=10,
        ge=1,
        description=(
            "`database` isolation: the most connections one tenant may hold at once; a tenant's "
            "pool opens them on demand, starting with one, within `database_connection_budget`"
        ),
    )
    database_connection_budget: int = Field(
        default=50,
        ge=1,
        description=(
            "`database` isolation: server connections all tenant engines of a process may hold "
            "together; an idle one is closed in the background to make room (the least recently "
            "used of those that served one request, before any that served more), and a request "
            "that finds none waits in line (up to `database_pool_timeout`, then `503`)"
        ),
    )

    # Lifecycle and audit.
    enable_soft_delete: bool = Field(
        default=True,
        description=(
            "`delete_tenant` keeps the data (restorable) when true, and purges at once when false"
        ),
    )
    enable_audit_logging: bool = Field(
        default=False,
        description=(
            "record lifecycle changes and tenant write requests (POST/PUT/PATCH/DELETE: tenant, "
            "action, JWT subject, path, status, time) to the `fastapi_tenancy.audit` logger and the"
            " `tenancy_audit` table, from a background queue that never delays a request"
        ),
    )
    audit_spill_path: str = Field(
        default="./tenancy-audit-spill.jsonl",
        min_length=1,
        description=(
            "audit records the central database cannot take (down past a few seconds of retries, "
            "or at shutdown) are appended to this local file (JSON lines, fsync'd, mode `0600`) "
            "and written to the table once it answers again, or at the next start; shared safely "
            "by the processes of one host"
        ),
    )
    audit_flush_timeout: float = Field(
        default=5.0,
        gt=0,
        description=(
            "seconds shutdown spends writing queued audit records to their sinks; what is left "
            "then goes to `audit_spill_path`"
        ),
    )
    shutdown_timeout: float = Field(
        default=15.0,
        gt=0,
        description=(
            "seconds `Tenancy.close()` (application shutdown) may take in all; a step that is "
            "still waiting then (a stalled network, a request that never ends) is abandoned and "
            "logged. Keep it below the server's graceful timeout (gunicorn `graceful_timeout`, "
            "uvicorn `--timeout-graceful-shutdown`)"
        ),
    )

    # ⑥ Observability: Prometheus metrics and the slow-query log.
    enable_metrics: bool = Field(
        default=False,
        description=(
            "Prometheus metrics (extra `metrics`): requests by outcome, resolution time, cache, "
            "rate limits, engines, pools, slow queries; serve them with "
            "`fastapi_tenancy.metrics.metrics_app()`. Honours `PROMETHEUS_MULTIPROC_DIR` for "
            "multi-worker servers"
        ),
    )
    metrics_tenant_label: bool = Field(
        default=False,
        description=(
            "add a `tenant` label to the request, rate-limit and slow-query counters, bounded by "
            "`metrics_tenant_label_limit`"
        ),
    )
    metrics_tenant_label_limit: int = Field(
        default=20,
        ge=1,
        description=(
            "K: the first K tenants a process sees keep their own `tenant` label, every later one "
            "is counted as `other`, so each metric has at most K + 2 tenant values"
        ),
    )
    slow_query_threshold_ms: float | None = Field(
        default=None,
        ge=0,
        description=(
            "log statements that take at least this many milliseconds (`0`: all) at WARNING on "
            "`fastapi_tenancy.slow_query`, with the tenant and the statement text (never its "
            "parameters), and count them"
        ),
    )

    # Edge routing (fastapi_tenancy.edge): each active tenant's hosts published to Traefik's
    # Redis KV provider, kept in step with the lifecycle.
    edge_enabled: bool = Field(
        default=False,
        description=(
            "publish a Traefik router per active tenant (its `<identifier>.<domain_suffix>` and "
            "custom domains) to Traefik's Redis provider, updated on every lifecycle and domain "
            "change — see [edge routing](deployment.md#edge-routing-with-traefik)"
        ),
    )
    edge_redis_url: SecretStr | None = Field(
        default=None,
        repr=False,
        description=(
            "the Redis Traefik's Redis provider reads (default: `redis_url`); the database number "
            "in the URL must match the provider's `db`. Never printed."
        ),
    )
    edge_root_key: str = Field(
        default="traefik",
        pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
        description="the provider's `rootKey`: routers are written under `<root>/http/routers/`",
    )
    edge_router_prefix: str = Field(
        default="tenant-",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description=(
            "routers are named `<prefix><identifier>`; only routers with this prefix are ever "
            "written or removed, so other routers under the same root key are left alone"
        ),
    )
    edge_service: str = Field(
        default="tenancy-app",
        pattern=r"^[A-Za-z0-9_.-]+(@[A-Za-z0-9_-]+)?$",
        description=(
            "the Traefik service every tenant router points at, e.g. `app@docker` for a service "
            "another provider defines"
        ),
    )
    edge_service_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description=(
            "when set (`http://app:8000,http://app2:8000`), `edge_service` is defined in Redis too,"
            " load-balancing over these servers; leave empty when another provider defines it"
        ),
    )
    edge_entrypoints: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Traefik entry points of the tenant routers (empty: every entry point)",
    )
    edge_cert_resolver: str | None = Field(
        default=None,
        description=(
            "a Traefik certificate resolver (ACME) for the tenant routers, which then serve TLS "
            "with a certificate for each of the tenant's hosts, custom domains included"
        ),
    )
    edge_sync_on_start: bool = Field(
        default=True,
        description=(
            "reconcile every route when the runtime starts (app, worker or CLI), which also "
            "repairs routes a lost event or a flushed Redis left behind"
        ),
    )

    # The TENANCY_* names that were set but are no setting, one line each; see `unknown_settings`.
    _unknown: tuple[str, ...] = PrivateAttr(default=())

    if not TYPE_CHECKING:  # mypy keeps the signature the pydantic plugin derives from the fields

        def __init__(self, **values: Any) -> None:
            fields = type(self).model_fields
            unknown = [name for name in values if name not in fields and not name.startswith("_")]
            if unknown:
                raise ConfigurationError(
                    "; ".join(
                        f"TenancyConfig has no setting {name!r}" + _suggestion(name, fields)
                        for name in unknown
                    )
                )
            if "tenant_database_urls" not in values:
                env_file = values.get("_env_file", self.model_config.get("env_file"))
                urls = _tenant_urls(os.environ, _env_file_entries(env_file))
                if urls:
                    values = {**values, "tenant_database_urls": urls}
            try:
                super().__init__(**values)
            except ValidationError as exc:
                raise ConfigurationError(describe_validation_error(exc)) from None
            env_file = values.get("_env_file", self.model_config.get("env_file"))
            self._unknown = tuple(unknown_environment(os.environ, _env_file_entries(env_file)))
            for problem in self._unknown:
                logger.warning(problem)

    @property
    def unknown_settings(self) -> tuple[str, ...]:
        """``TENANCY_*`` variables (environment or ``.env``) that are no setting, so do nothing."""
        return self._unknown

    @field_validator("tenant_database_urls")
    @classmethod
    def _check_tenant_urls(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        from fastapi_tenancy.models import IDENTIFIER_PATTERN

        for identifier, url in value.items():
            variable = tenant_url_variable(identifier)
            if IDENTIFIER_PATTERN.fullmatch(identifier) is None:
                raise ValueError(
                    f"{variable} names no valid tenant identifier (lower-case letters, digits "
                    "and inner hyphens, written upper case with '_' for '-')"
                )
            problem = _url_problem(url.get_secret_value())
            if problem is not None:
                raise ValueError(f"{variable}: {problem}")
        return value

    @field_validator("database_url", "database_url_template")
    @classmethod
    def _async_driver(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            problem = _url_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("database_servers")
    @classmethod
    def _check_servers(cls, value: tuple[DatabaseServer, ...]) -> tuple[DatabaseServer, ...]:
        names = [server.name for server in value]
        for server in value:
            if server.name == DEFAULT_SERVER or names.count(server.name) > 1:
                raise ValueError(
                    f"server name {server.name!r} is reserved or listed twice; give each server "
                    "a name of its own"
                )
            problem = _url_problem(server.url.get_secret_value())
            if problem is not None:
                raise ValueError(f"server {server.name!r}: {problem}")
        return value

    @field_validator(
        "resolution_strategy",
        "trusted_proxies",
        "excluded_paths",
        "edge_service_urls",
        "edge_entrypoints",
        mode="before",
    )
    @classmethod
    def _lists_from_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("resolution_strategy")
    @classmethod
    def _at_least_one_strategy(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one resolution strategy")
        if len(set(value)) != len(value):
            raise ValueError("a resolution strategy is listed twice")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        value = _split_csv(value)
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
        return value

    @field_validator("excluded_paths")
    @classmethod
    def _normalise_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_exclusion(path) for path in value)

    @field_validator("tenant_path_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("tenant_path_prefix must be empty or start with '/'")
        return value

    @field_validator("redis_url", "edge_redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from fastapi_tenancy._redis import parse_redis_url

            parse_redis_url(value.get_secret_value())  # its errors never repeat the password
        return value

    @field_validator("edge_service_urls")
    @classmethod
    def _check_service_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://", "h2c://")):
                raise ValueError(f"edge_service_urls: {url!r} must start with http:// or https://")
        return value

    @field_validator("domain_suffix")
    @classmethod
    def _normalise_suffix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower().strip(".")
        if not value:
            raise ValueError("domain_suffix must be a domain such as 'example.com'")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> TenancyConfig:
        strategies = set(self.resolution_strategy)
        if self.alembic_config is not None:
            if "tenant_tables" in self.model_fields_set and self.tenant_tables == "metadata":
                raise ConfigurationError(
                    "alembic_config makes Alembic create the tenant tables: "
                    "TENANCY_TENANT_TABLES=metadata would create them a second time (unset it)"
                )
            self.tenant_tables = "none"
        if "subdomain" in strategies and self.domain_suffix is None:
            raise ConfigurationError(
                "resolution_strategy 'subdomain' needs TENANCY_DOMAIN_SUFFIX "
                "(for example 'example.com', so 'acme.example.com' names tenant 'acme')"
            )
        if "jwt" in strategies:
            self._check_jwt()
        if self.edge_enabled and self.edge_redis_url is None and self.redis_url is None:
            raise ConfigurationError(
                "edge_enabled needs a Redis to publish routes to: set TENANCY_EDGE_REDIS_URL "
                "(or TENANCY_REDIS_URL)"
            )
        if self.edge_service_urls and "@" in self.edge_service:
            raise ConfigurationError(
                "edge_service_urls defines the service in Redis, so edge_service names no other "
                f"provider: drop the '@...' from {self.edge_service!r}"
            )
        if self.database_url_template is not None and "{database}" not in (
            self.database_url_template
        ):
            raise ConfigurationError(
                "database_url_template needs a '{database}' placeholder, e.g. "
                "'postgresql+asyncpg://app@db:5432/{database}'"
            )
        if self.database_servers:
            self._check_server_pool()
        if self.schema_binding == "search_path" and self.database_backend != "postgresql":
            raise ConfigurationError(
                "schema_binding 'search_path' exists on PostgreSQL only; MariaDB/MySQL use "
                "'translate_map' (or leave it 'auto')"
            )
        if self.statement_timeout is not None and self.database_backend == "sqlite":
            raise ConfigurationError(
                "statement_timeout needs PostgreSQL or MariaDB/MySQL: SQLite has no statement "
                "timeout (unset TENANCY_STATEMENT_TIMEOUT)"
            )
        if self.audit_flush_timeout > self.shutdown_timeout:
            raise ConfigurationError(
                "audit_flush_timeout is part of shutdown: it must not exceed shutdown_timeout"
            )
        if self.metrics_tenant_label and not self.enable_metrics:
            raise ConfigurationError(
                "metrics_tenant_label labels the Prometheus metrics: it needs "
                "TENANCY_ENABLE_METRICS=true"
            )
        if self.isolation_strategy == "schema" and self.database_backend == "sqlite":
            raise ConfigurationError(
                "isolation_strategy 'schema' needs PostgreSQL or MariaDB/MySQL; with SQLite use "
                "'row' isolation"
            )
        if self.row_level_security and self.isolation_strategy != "row":
            raise ConfigurationError(
                "row_level_security applies to isolation_strategy 'row' only; schema and database "
                "isolation keep tenants apart without it (unset TENANCY_ROW_LEVEL_SECURITY)"
            )
        if self.row_level_security and self.database_backend != "postgresql":
            raise ConfigurationError(
                "row_level_security needs PostgreSQL; on "
                f"{self.database_backend} row isolation relies on the ORM filter alone "
                "(unset TENANCY_ROW_LEVEL_SECURITY)"
            )
        return self

    @property
    def database_backend(self) -> str:
        """The central database's kind: ``postgresql``, ``mysql``, ``mariadb`` or ``sqlite``."""
        scheme = self.database_url.split(":", 1)[0]
        return scheme.split("+", 1)[0]

    def _check_server_pool(self) -> None:
        if self.isolation_strategy == "row":
            raise ConfigurationError(
                "database_servers places tenants' schemas or databases on servers: it needs "
                "isolation_strategy 'schema' or 'database' (row isolation keeps every tenant in "
                "the central database)"
            )
        for server in self.database_servers:
            url = server.url.get_secret_value()
            backend = url.split(":", 1)[0].split("+", 1)[0]
            if self.isolation_strategy == "schema" and (backend == "sqlite" or "{database}" in url):
                raise ConfigurationError(
                    f"database server {server.name!r}: schema isolation keeps tenant schemas in "
                    "the database the URL names: give a PostgreSQL or MariaDB/MySQL URL without "
                    "'{database}'"
                )
            if backend == "sqlite" and "{database}" not in url:
                raise ConfigurationError(
                    f"database server {server.name!r}: a SQLite server URL needs a '{{database}}' "
                    "placeholder for the tenant's file, e.g. 'sqlite+aiosqlite:///./pg1/{database}.db'"
                )

    def _check_jwt(self) -> None:
        # The policy lives with JWT resolution; imported here, as resolution's wiring reads this
        # module.
        from fastapi_tenancy.resolution.jwt import check_jwt_settings

        check_jwt_settings(
            self.jwt_algorithm,
            None if self.jwt_secret is None else self.jwt_secret.get_secret_value(),
            self.jwt_jwks_url,
        )

"""Settings in, components out: the one runtime module that reads `TenancyConfig`.

Components take plain arguments (a header name, a pool size, a key, an engine factory) and know
nothing of the config; this module knows which setting feeds which argument. `Tenancy` composes
itself from these functions, and so can an app that wants one piece on its own::

    resolver = _wiring.resolver(TenancyConfig(resolution_strategy="header,jwt", ...))

Which settings each component reads is visible here, in one place, which is also how a setting
that nothing reads shows up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.config import ResolutionStrategy, TenancyConfig
from fastapi_tenancy.engines import EngineFamily, create_engine, same_database
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.isolation.placement import ServerPool
from fastapi_tenancy.isolation.row import RowIsolation
from fastapi_tenancy.isolation.schema import SchemaIsolation
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.resolution.base import TenantResolver
from fastapi_tenancy.resolution.chain import ChainResolver
from fastapi_tenancy.resolution.header import HeaderResolver
from fastapi_tenancy.resolution.jwks import JWKSKeys
from fastapi_tenancy.resolution.jwt import JWTResolver, SigningKeys
from fastapi_tenancy.resolution.path import PathResolver
from fastapi_tenancy.resolution.subdomain import SubdomainResolver
from fastapi_tenancy.store.sqlalchemy import SQLAlchemyTenantStore

if TYPE_CHECKING:
    from fastapi_tenancy.cache.base import CacheObserver, TenantCache
    from fastapi_tenancy.edge import EdgeSettings, TraefikEdge
    from fastapi_tenancy.isolation.alembic_template import AlembicSchemas
    from fastapi_tenancy.isolation.templates import DatabaseTemplate
    from fastapi_tenancy.lookup import TenantLookup
    from fastapi_tenancy.observe.audit import AuditTrail
    from fastapi_tenancy.observe.metrics import TenancyMetrics
    from fastapi_tenancy.observe.observer import TenancyObserver
    from fastapi_tenancy.observe.slowquery import SlowQueryLog
    from fastapi_tenancy.ratelimit import TenantRateLimiter
    from fastapi_tenancy.readiness import Readiness
    from fastapi_tenancy.store.base import TenantStore
    from fastapi_tenancy.tenancy import Tenancy

__all__ = [
    "OperationsSettings",
    "RuntimeSettings",
    "audit_trail",
    "cache",
    "central_engine",
    "database_isolation",
    "edge",
    "edge_settings",
    "isolation",
    "limiter",
    "lookup",
    "metrics",
    "operations_settings",
    "resolver",
    "rate_limiter",
    "readiness",
    "runtime_settings",
    "server_pool",
    "signing_keys",
    "slow_queries",
    "store",
    "tenancy_metrics",
    "tenant_engine_factory",
    "traefik_edge",
]


# Plain settings: what the runtime and the operations layer read themselves


@dataclass(frozen=True, slots=True)
class OperationsSettings:
    """The plain values the operations layer reads: migrations, adoption, backup, restore, moves.

    Those modules work on a built `Tenancy` (its store, engine, isolation and server pool) and
    read the rest here, never the config: where each strategy keeps a tenant's tables, the URLs
    that reach them, and how many tenants run at once.
    """

    isolation_strategy: Literal["row", "schema", "database"]
    # The central database, password included: schema isolation's tenants live there (or on a
    # server of the pool), and error messages are scrubbed of its password.
    database_url: str = field(repr=False)
    database_url_template: str | None = field(repr=False)
    # Database isolation: TENANCY_DATABASE_URL_<TENANT>, which wins over the template.
    tenant_database_urls: Mapping[str, SecretStr] = field(repr=False)
    tenant_metadata: str | MetaData | None
    # Tenants migrated (or read) at once on each database server: the central pool's size.
    concurrency: int
    # For a one-connection engine per tenant database: the central pool's timeouts and options.
    engine_options: Mapping[str, Any] = field(repr=False)

    def engine(self, url: str) -> AsyncEngine:
        """A one-connection engine for ``url``; the caller disposes it."""
        return create_engine(url, **self.engine_options)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """The plain values `Tenancy` and its middleware read themselves (the rest feed components).

    ``operations`` is the part only the operations layer reads (`OperationsSettings`).
    """

    shutdown_timeout: float
    audit_flush_timeout: float
    edge_sync_on_start: bool
    soft_delete: bool
    # How long a purge waits for the tenant's in-flight work (as long as a pool checkout may).
    drain_timeout: float
    domain_suffix: str | None
    excluded_paths: tuple[str, ...]
    isolation_strategy: Literal["row", "schema", "database"]
    # What `create_tenant` checks before it writes: the tables a new tenant would get.
    tenant_metadata: str | MetaData | None
    tenant_tables: Literal["metadata", "none"]
    operations: OperationsSettings


def runtime_settings(config: TenancyConfig) -> RuntimeSettings:
    """What the runtime reads of ``config`` itself: timeouts, policies, paths."""
    return RuntimeSettings(
        shutdown_timeout=config.shutdown_timeout,
        audit_flush_timeout=config.audit_flush_timeout,
        edge_sync_on_start=config.edge_sync_on_start,
        soft_delete=config.enable_soft_delete,
        drain_timeout=config.database_pool_timeout,
        domain_suffix=config.domain_suffix,
        excluded_paths=tuple(config.excluded_paths),
        isolation_strategy=config.isolation_strategy,
        tenant_metadata=config.tenant_metadata,
        tenant_tables=config.tenant_tables,
        operations=operations_settings(config),
    )


def operations_settings(config: TenancyConfig) -> OperationsSettings:
    """What migrations, adoption and transfers read of ``config`` (see `OperationsSettings`)."""
    return OperationsSettings(
        isolation_strategy=config.isolation_strategy,
        database_url=config.database_url,
        database_url_template=config.database_url_template,
        tenant_database_urls=MappingProxyType(dict(config.tenant_database_urls)),
        tenant_metadata=config.tenant_metadata,
        concurrency=config.database_pool_size,
        engine_options=MappingProxyType(engine_options(config, pool_size=1, max_overflow=0)),
    )


# The central engine


def central_database(config: TenancyConfig, engine: AsyncEngine) -> TenancyConfig:
    """``config`` with ``database_url`` naming the app engine's database (refused if another)."""
    if "database_url" not in config.model_fields_set:
        url = engine.url.render_as_string(hide_password=False)
        # No combination check is repeated: the default (SQLite) database_url already refused
        # every setting that needs a server.
        return config.model_copy(update={"database_url": url})
    if not same_database(make_url(config.database_url), engine.url):
        raise ConfigurationError(
            "engine= reaches another database than database_url: the tenant records and the "
            "shared tables live in one central database. Point TENANCY_DATABASE_URL at the "
            "engine's database (the CLI uses it) or leave it unset"
        )
    return config


def central_engine(
    config: TenancyConfig,
    url: str | None = None,
    *,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    echo: bool | None = None,
    null_pool: bool = False,
) -> AsyncEngine:
    """An engine for ``url`` (default: ``database_url``) with the configured pool and timeouts.

    ``pool_size``, ``max_overflow`` and ``echo`` override the settings (tenant engines are small;
    the CLI keeps its output free of SQL echo).
    """
    return create_engine(
        url or config.database_url,
        **engine_options(config, pool_size, max_overflow, echo=echo, null_pool=null_pool),
    )


def engine_options(
    config: TenancyConfig,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    *,
    echo: bool | None = None,
    null_pool: bool = False,
) -> dict[str, Any]:
    """`create_engine`'s keyword arguments from the settings (see `central_engine`)."""
    return {
        "pool_size": config.database_pool_size if pool_size is None else pool_size,
        "max_overflow": config.database_max_overflow if max_overflow is None else max_overflow,
        "pool_timeout": config.database_pool_timeout,
        "pool_recycle": config.database_pool_recycle,
        "pool_pre_ping": config.database_pool_pre_ping,
        "echo": config.database_echo if echo is None else echo,
        "pgbouncer": config.database_pgbouncer,
        "statement_timeout": config.statement_timeout,
        "null_pool": null_pool,
    }


def store(config: TenancyConfig, engine: AsyncEngine) -> SQLAlchemyTenantStore:
    """The tenant store on the central engine, migrating its tables at start or only checking."""
    return SQLAlchemyTenantStore(engine, central_migrations=config.central_migrations)


# ① Resolution


def signing_keys(config: TenancyConfig) -> JWKSKeys | None:
    """The JWKS the ``jwt`` strategy picks keys from, when ``jwt_jwks_url`` is set and used."""
    if config.jwt_jwks_url is None or "jwt" not in config.resolution_strategy:
        return None
    return JWKSKeys(
        config.jwt_jwks_url,
        config.jwt_algorithm,
        refresh_interval=config.jwt_jwks_refresh_interval,
        min_refresh_interval=config.jwt_jwks_min_refresh_interval,
    )


def resolver(config: TenancyConfig, keys: SigningKeys | None = None) -> TenantResolver:
    """The resolver for ``resolution_strategy``: one strategy, or a chain in that order.

    ``keys`` is the key set the ``jwt`` strategy selects from when ``jwt_jwks_url`` is set
    (`signing_keys`, which `Tenancy` fetches and refreshes).
    """
    resolvers = [_one_resolver(config, strategy, keys) for strategy in config.resolution_strategy]
    if len(resolvers) == 1:
        return resolvers[0]
    return ChainResolver(*resolvers)


def _one_resolver(
    config: TenancyConfig, strategy: ResolutionStrategy, keys: SigningKeys | None
) -> TenantResolver:
    match strategy:
        case "header":
            return HeaderResolver(config.tenant_header_name)
        case "subdomain":
            if config.domain_suffix is None:
                raise ConfigurationError("resolution strategy 'subdomain' needs domain_suffix")
            return SubdomainResolver(
                config.domain_suffix, config.trusted_proxies, custom_domains=config.custom_domains
            )
        case "jwt":
            key: str | SigningKeys
            if config.jwt_jwks_url is not None:
                if keys is None:
                    raise ConfigurationError(
                        "jwt_jwks_url is set: pass the fetched key set as signing_keys"
                    )
                key = keys
            elif config.jwt_secret is not None:
                key = config.jwt_secret.get_secret_value()
            else:
                raise ConfigurationError("resolution strategy 'jwt' needs jwt_secret")
            return JWTResolver(
                key,
                config.jwt_algorithm,
                config.jwt_tenant_claim,
                audience=config.jwt_audience,
                issuer=config.jwt_issuer,
                leeway=config.jwt_leeway,
            )
        case "path":
            return PathResolver(config.tenant_path_prefix)


# ② Lookup and its cache


def cache(config: TenancyConfig, observer: CacheObserver | None = None) -> TenantCache | None:
    """``None`` when caching is off; process memory, in front of Redis when ``redis_url`` is set."""
    if not config.cache_enabled:
        return None
    from fastapi_tenancy.cache.memory import MemoryTenantCache

    memory = MemoryTenantCache(config.cache_max_size, observer=observer)
    if config.redis_url is None:
        return memory
    # Imported here: redis-py is an optional extra, needed only when Redis is configured.
    from fastapi_tenancy.cache.layered import LayeredTenantCache
    from fastapi_tenancy.cache.redis import RedisTenantCache, redis_client

    client = redis_client(config.redis_url.get_secret_value(), timeout=config.redis_timeout)
    return LayeredTenantCache(
        memory, RedisTenantCache(client, prefix=config.cache_key_prefix), observer=observer
    )


def lookup(config: TenancyConfig, store: TenantStore, cache: TenantCache | None) -> TenantLookup:
    """The lookup through ``cache`` to ``store``, with the configured TTLs."""
    from fastapi_tenancy.lookup import TenantLookup

    return TenantLookup(store, cache, ttl=config.cache_ttl, negative_ttl=config.cache_negative_ttl)


# ③ Rate limiting


def limiter(
    config: TenancyConfig, observer: TenancyObserver | None = None
) -> TenantRateLimiter | None:
    """The per-tenant rate limiter, when ``enable_rate_limiting`` is on."""
    if not config.enable_rate_limiting:
        return None
    return rate_limiter(config, observer)


def rate_limiter(
    config: TenancyConfig, observer: TenancyObserver | None = None
) -> TenantRateLimiter:
    """The rate limiter the settings describe, whether or not ``enable_rate_limiting`` is on."""
    from fastapi_tenancy.ratelimit import TenantRateLimiter

    uri = "async+memory://"
    if config.redis_url is not None:
        uri = "async+" + config.redis_url.get_secret_value()
    return TenantRateLimiter(
        uri,
        per_minute=config.rate_limit_per_minute,
        plans=config.rate_limit_plans,
        fail_closed=config.rate_limit_fail_closed,
        timeout=config.redis_timeout,
        observer=observer,
    )


# ⑤ Isolation


def isolation(config: TenancyConfig, engine: AsyncEngine) -> IsolationStrategy:
    """The strategy ``isolation_strategy`` names, on the central ``engine``."""
    tables = TenantTables(config.tenant_metadata)
    match config.isolation_strategy:
        case "row":
            return RowIsolation(engine, tables, row_level_security=config.row_level_security)
        case "schema":
            central = _schema_isolation(config, engine, tables)
            if not config.database_servers:
                return central
            return _schema_over_servers(config, central, tables)
        case "database":
            return database_isolation(config, tables, engine)


def _schema_isolation(
    config: TenancyConfig, engine: AsyncEngine, tables: TenantTables
) -> SchemaIsolation:
    binding = config.schema_binding
    if binding == "auto":
        binding = "search_path" if engine.dialect.name == "postgresql" else "translate_map"
    return SchemaIsolation(
        engine,
        tables,
        prefix=config.schema_prefix,
        binding=binding,
        shared_schema=config.shared_schema,
        alembic=alembic_schemas(config),
    )


def _schema_over_servers(
    config: TenancyConfig, central: SchemaIsolation, tables: TenantTables
) -> IsolationStrategy:
    """Schema isolation with a pool: an engine (with the central pool's settings) per server."""
    from fastapi_tenancy.isolation.routed import ServerRoutedIsolation

    engines = {
        server.name: central_engine(config, server.url.get_secret_value())
        for server in config.database_servers
    }
    return ServerRoutedIsolation(
        central,
        {name: _schema_isolation(config, engine, tables) for name, engine in engines.items()},
        pool=server_pool(config),
        engines=list(engines.values()),
    )


def server_pool(config: TenancyConfig) -> ServerPool:
    """The configured ``database_servers`` (empty: the default server only)."""
    return ServerPool(config.database_servers)


def database_isolation(
    config: TenancyConfig, tables: TenantTables, engine: AsyncEngine | None = None
) -> DatabaseIsolation:
    """A database per tenant: URLs from ``database_url_template``, engines within the budget.

    ``engine`` is the central one, where the shared tables live.
    """
    return DatabaseIsolation(
        tables,
        shared_engine=engine,
        tenant_urls=config.tenant_database_urls,
        engine_factory=tenant_engine_factory(config),
        url_template=config.database_url_template,
        storage_prefix=config.schema_prefix,
        max_engines=config.max_cached_engines,
        connection_budget=config.database_connection_budget,
        budget_timeout=config.database_pool_timeout,
        servers=server_pool(config),
        template=alembic_database_template(config),
    )


def alembic_schemas(config: TenancyConfig) -> AlembicSchemas | None:
    """``alembic_config`` under schema isolation: tenants made at the head, from a template."""
    if config.alembic_config is None:
        return None
    from fastapi_tenancy.isolation.alembic_template import AlembicRevisions, AlembicSchemas

    return AlembicSchemas(AlembicRevisions(config.alembic_config, config.schema_prefix))


def alembic_database_template(config: TenancyConfig) -> DatabaseTemplate | None:
    """``alembic_config`` under database isolation: tenant databases copied at the head."""
    if config.alembic_config is None:
        return None
    from fastapi_tenancy.isolation.alembic_template import (
        AlembicDatabaseTemplate,
        AlembicRevisions,
    )

    revisions = AlembicRevisions(config.alembic_config, config.schema_prefix)
    return AlembicDatabaseTemplate(revisions, config.schema_prefix)


def tenant_engine_factory(config: TenancyConfig) -> Callable[[str], AsyncEngine]:
    """Small engines for tenant databases: the central pool's settings, ``tenant_pool_size``."""
    # The pool opens connections on demand: its size caps one tenant, the budget all of them.
    size = min(config.tenant_pool_size, config.database_connection_budget)
    # Engines of one server share its dialect, initialised once: a new tenant engine's first
    # connection costs one connect (fastapi_tenancy.engines.EngineFamily).
    return EngineFamily(**engine_options(config, pool_size=size, max_overflow=0))


# ⑥ Observation


def metrics(config: TenancyConfig) -> TenancyMetrics | None:
    """The Prometheus metrics, when ``enable_metrics`` is on."""
    if not config.enable_metrics:
        return None
    # prometheus-client is an optional extra: imported only when metrics are enabled.
    try:
        return tenancy_metrics(config)
    except ModuleNotFoundError as exc:
        if exc.name != "prometheus_client":
            raise
        raise ConfigurationError(
            "enable_metrics needs prometheus-client: install fastapi-tenancy-kit[metrics]"
        ) from exc


def tenancy_metrics(config: TenancyConfig) -> TenancyMetrics:
    """The metrics with the configured ``tenant`` label, whether or not ``enable_metrics``."""
    from fastapi_tenancy.observe.metrics import TenancyMetrics

    return TenancyMetrics(
        tenant_label=config.metrics_tenant_label,
        tenant_label_limit=config.metrics_tenant_label_limit,
    )


def slow_queries(
    config: TenancyConfig, observer: TenancyObserver | None = None
) -> SlowQueryLog | None:
    """The slow-query log, when ``slow_query_threshold_ms`` is set."""
    if config.slow_query_threshold_ms is None:
        return None
    from fastapi_tenancy.observe.slowquery import SlowQueryLog

    return SlowQueryLog(config.slow_query_threshold_ms, observer=observer)


def audit_trail(
    config: TenancyConfig, engine: AsyncEngine, *, on_drop: Callable[[str, int], None] | None = None
) -> AuditTrail | None:
    """The audit trail (the log and the ``tenancy_audit`` table), when audit logging is on."""
    if not config.enable_audit_logging:
        return None
    from fastapi_tenancy.observe.audit import AuditTrail, DatabaseAuditSink, LoggingAuditSink

    return AuditTrail(
        [LoggingAuditSink(), DatabaseAuditSink(engine)],
        spill_path=config.audit_spill_path,
        flush_timeout=config.audit_flush_timeout,
        on_drop=on_drop,
    )


# Off the request path


def readiness(config: TenancyConfig, tenancy: Tenancy) -> Readiness:
    """``tenancy``'s readiness checks: a pool-less engine of its own, Redis when configured."""
    from fastapi_tenancy.readiness import Readiness

    return Readiness(
        tenancy,
        lambda: central_engine(config, null_pool=True),
        redis_cache=config.redis_url is not None,
    )


def edge(config: TenancyConfig) -> TraefikEdge | None:
    """The Traefik edge router sync, when ``edge_enabled`` is on."""
    if not config.edge_enabled:
        return None
    return traefik_edge(config)


def edge_settings(config: TenancyConfig) -> EdgeSettings:
    """Where and how the routers are written: the ``edge_*`` settings and ``domain_suffix``."""
    from fastapi_tenancy.edge import EdgeSettings

    return EdgeSettings(
        service=config.edge_service,
        root_key=config.edge_root_key,
        router_prefix=config.edge_router_prefix,
        domain_suffix=config.domain_suffix,
        service_urls=config.edge_service_urls,
        entrypoints=config.edge_entrypoints,
        cert_resolver=config.edge_cert_resolver,
    )


def traefik_edge(config: TenancyConfig) -> TraefikEdge:
    """The edge sync on ``edge_redis_url`` (or ``redis_url``), whether or not ``edge_enabled``."""
    url = config.edge_redis_url or config.redis_url
    if url is None:
        raise ConfigurationError("edge routing needs TENANCY_EDGE_REDIS_URL or REDIS_URL")
    # Imported here: the request path never needs them.
    from fastapi_tenancy._redis import redis_client
    from fastapi_tenancy.edge import TraefikEdge

    client = redis_client(url.get_secret_value(), timeout=config.redis_timeout)
    return TraefikEdge(client, edge_settings(config))

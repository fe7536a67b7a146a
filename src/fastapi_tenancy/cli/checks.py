"""The production checklist behind ``fastapi-tenancy doctor``: one small function per check.

Each check takes the loaded config (and, where it needs them, facts read from the server) and
returns a `CheckResult`; none does I/O, so each can be called on its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.engine import URL, make_url

from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exclusions import PathExclusions
from fastapi_tenancy.isolation.rls import RlsProblem
from fastapi_tenancy.resolution.jwt import HMAC_ALGORITHMS

if TYPE_CHECKING:
    from fastapi_tenancy.adoption import UnownedRows

__all__ = [
    "CheckResult",
    "Connection",
    "ServerFacts",
    "Status",
    "check_adopted_rows",
    "check_config",
    "check_database",
    "check_echo",
    "check_shared_state",
    "check_engine_cache",
    "check_health_path",
    "check_jwks_server",
    "check_jwt",
    "check_redis_server",
    "check_tenant_storage",
    "check_unknown_settings",
    "check_pool",
    "check_row_isolation_wall",
    "check_row_level_security",
    "check_sqlite_workers",
    "check_ssl",
    "run_checks",
]

Status = Literal["ok", "warn", "fail"]

# The paths of `fastapi_tenancy.health_router()`, where probes are pointed.
HEALTH_PATHS = ("/health/live", "/health/ready")
SERVER_BACKENDS = frozenset({"postgresql", "mysql", "mariadb"})
SSL_PARAMETERS = ("sslmode", "ssl", "ssl_mode", "ssl_ca")
# Values that leave TLS off or optional: an attacker on the path can still downgrade the link.
WEAK_SSL_VALUES = frozenset({"disable", "disabled", "allow", "prefer", "preferred", "false", "0"})


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Connection:
    """One configured server the doctor connected to (or failed to)."""

    seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ServerFacts:
    """What the doctor read from the central database; ``None`` where it could not tell."""

    reachable: bool
    error: str | None = None
    max_connections: int | None = None
    tenant_count: int | None = None
    # Why PostgreSQL would not enforce row-level security; read only when it is configured.
    rls_problems: tuple[RlsProblem, ...] | None = None
    seconds: float | None = None
    # Why the isolation strategy cannot serve some recorded tenants (`preflight.storage_mismatch`).
    storage_mismatch: str | None = None
    redis: Connection | None = None
    jwks: Connection | None = None
    # Row isolation: tenant tables with rows without a tenant or a nullable tenant_id.
    unowned: tuple[UnownedRows, ...] | None = None
    # The identifiers of every recorded tenant (deleted ones too); None when not read.
    tenant_identifiers: tuple[str, ...] | None = None


def check_config(error: str | None) -> CheckResult:
    """The config loads; ``error`` is the message it failed with, if it did."""
    if error is None:
        return CheckResult("config", "ok", "TENANCY_* settings load")
    return CheckResult("config", "fail", error, "correct the setting named above")


def check_unknown_settings(config: TenancyConfig) -> CheckResult:
    """Every ``TENANCY_*`` variable set is a setting: a misspelt one is silently ignored."""
    if not config.unknown_settings:
        return CheckResult("settings", "ok", "every TENANCY_* variable is a setting")
    return CheckResult(
        "settings",
        "fail",
        "; ".join(config.unknown_settings),
        "rename or remove the variable; the default stays in force until then",
    )


def check_tenant_storage(config: TenancyConfig, mismatch: str | None) -> CheckResult:
    """The recorded tenants were created under the configured isolation strategy."""
    if mismatch is None:
        return CheckResult(
            "storage", "ok", f"every tenant's storage fits {config.isolation_strategy} isolation"
        )
    return CheckResult(
        "storage", "fail", mismatch, "see docs/isolation.md#changing-the-isolation-strategy"
    )


def check_tenant_urls(config: TenancyConfig, identifiers: tuple[str, ...] | None) -> CheckResult:
    """Every ``TENANCY_DATABASE_URL_<TENANT>`` names a recorded tenant, under database isolation."""
    from fastapi_tenancy.config import tenant_url_variable

    urls = config.tenant_database_urls
    if not urls:
        return CheckResult("tenant-urls", "ok", "no TENANCY_DATABASE_URL_<TENANT> variable set")
    variables = ", ".join(tenant_url_variable(identifier) for identifier in sorted(urls))
    if config.isolation_strategy != "database":
        return CheckResult(
            "tenant-urls",
            "warn",
            f"{variables} set, but {config.isolation_strategy} isolation reads no tenant URL",
            "unset them, or use TENANCY_ISOLATION_STRATEGY=database",
        )
    if identifiers is None:
        return CheckResult("tenant-urls", "ok", f"{variables} set (tenants not read)")
    unknown = sorted(set(urls) - set(identifiers))
    if unknown:
        names = ", ".join(tenant_url_variable(identifier) for identifier in unknown)
        return CheckResult(
            "tenant-urls",
            "warn",
            f"{names} name(s) no tenant: a misspelt identifier, or a tenant not created yet",
            "the variable is the identifier in upper case with '_' for '-'",
        )
    return CheckResult("tenant-urls", "ok", f"{variables} each name a tenant")


def check_redis_server(config: TenancyConfig, connection: Connection | None) -> CheckResult:
    """The configured Redis answers; without it requests fail (or lose their shared state)."""
    if config.redis_url is None:
        return CheckResult("redis-up", "ok", "no Redis configured")
    if connection is None or connection.seconds is None:
        reason = connection.error if connection is not None else "not probed"
        if config.enable_rate_limiting and config.rate_limit_fail_closed:
            effect = "rate limiting fails closed: every tenant request answers 503"
        else:
            effect = "each process falls back to its own cache and counts"
        return CheckResult(
            "redis-up",
            "fail",
            f"{reason}; {effect}",
            "check TENANCY_REDIS_URL, the server, the network and the credentials",
        )
    return CheckResult("redis-up", "ok", f"Redis answers PING in {_ms(connection.seconds)}")


def check_jwks_server(config: TenancyConfig, connection: Connection | None) -> CheckResult:
    """The JWKS that signs the tokens can be fetched; without it start-up fails."""
    if config.jwt_jwks_url is None or "jwt" not in config.resolution_strategy:
        return CheckResult("jwks", "ok", "no JWKS configured")
    if connection is None or connection.seconds is None:
        reason = connection.error if connection is not None else "not probed"
        return CheckResult(
            "jwks",
            "fail",
            f"{reason}; the app cannot start without its keys",
            "check TENANCY_JWT_JWKS_URL and that this host can reach it",
        )
    return CheckResult(
        "jwks", "ok", f"the JWKS at {config.jwt_jwks_url} answers in {_ms(connection.seconds)}"
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def check_jwt(config: TenancyConfig) -> CheckResult:
    """JWT resolution has a secret and the library to verify with it."""
    if "jwt" not in config.resolution_strategy:
        return CheckResult("jwt", "ok", "jwt resolution is off; no secret needed")
    if find_spec("jwt") is None:
        return CheckResult(
            "jwt",
            "fail",
            "jwt resolution is on but PyJWT is not installed",
            "pip install 'fastapi-tenancy-kit[jwt]'",
        )
    if config.jwt_jwks_url is not None:
        return CheckResult(
            "jwt", "ok", f"{config.jwt_algorithm} keys come from the JWKS at {config.jwt_jwks_url}"
        )
    # TenancyConfig refuses a missing, short or placeholder secret, so a loaded one is sound.
    kind = "secret" if config.jwt_algorithm in HMAC_ALGORITHMS else "public key"
    return CheckResult("jwt", "ok", f"{config.jwt_algorithm} {kind} is set and strong enough")


def check_ssl(config: TenancyConfig) -> CheckResult:
    """Server URLs that leave the machine ask for TLS."""
    urls = {"database_url": config.database_url}
    if config.isolation_strategy == "database" and config.database_url_template:
        urls["database_url_template"] = config.database_url_template
    plain = [name for name, url in urls.items() if not _tls_or_local(url)]
    if not plain:
        return CheckResult("ssl", "ok", "remote server connections require TLS (or stay local)")
    return CheckResult(
        "ssl",
        "warn",
        f"{' and '.join(plain)} {'reaches' if len(plain) == 1 else 'reach'} a remote server "
        "without requiring TLS",
        "add ?ssl=require (asyncpg) or ?sslmode=require to PostgreSQL URLs, "
        "?ssl_ca=/path/to/ca.pem to MariaDB/MySQL URLs",
    )


def _tls_or_local(url: str) -> bool:
    try:
        parsed = make_url(url)
    except Exception:  # the template's placeholder or a typo: judged by the config check
        return True
    if parsed.get_backend_name() not in SERVER_BACKENDS or _is_local(parsed):
        return True
    values = [str(parsed.query[name]).lower() for name in SSL_PARAMETERS if name in parsed.query]
    return bool(values) and not any(value in WEAK_SSL_VALUES for value in values)


def _is_local(url: URL) -> bool:
    host = url.host
    if not host or host == "localhost" or host.startswith("/"):
        return True  # no host or a socket path: a Unix socket on this machine
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connections_per_worker(config: TenancyConfig) -> int:
    """The most server connections one process can open."""
    total = config.database_pool_size + config.database_max_overflow
    if config.isolation_strategy == "database":
        total += config.database_connection_budget
    return total


def check_pool(config: TenancyConfig, workers: int, max_connections: int | None) -> CheckResult:
    """All workers' pools together fit in the server's ``max_connections``."""
    if config.database_backend not in SERVER_BACKENDS:
        return CheckResult("pool", "ok", f"{config.database_backend} has no connection limit")
    per_worker = connections_per_worker(config)
    needed = workers * per_worker
    parts = f"{config.database_pool_size} pool + {config.database_max_overflow} overflow"
    if config.isolation_strategy == "database":
        parts += f" + {config.database_connection_budget} tenant budget"
    sizing = f"{workers} worker(s) x ({parts}) = {needed} connections"
    if max_connections is None:
        return CheckResult(
            "pool",
            "warn",
            f"{sizing}; the server's max_connections could not be read",
            "make the database reachable and rerun",
        )
    if needed > max_connections:
        return CheckResult(
            "pool",
            "fail",
            f"{sizing} > max_connections {max_connections}",
            "lower TENANCY_DATABASE_POOL_SIZE / TENANCY_DATABASE_MAX_OVERFLOW"
            + (
                " / TENANCY_DATABASE_CONNECTION_BUDGET"
                if config.isolation_strategy == "database"
                else ""
            )
            + ", run fewer workers, raise max_connections, or pool with PgBouncer",
        )
    return CheckResult("pool", "ok", f"{sizing} <= max_connections {max_connections}")


def check_sqlite_workers(config: TenancyConfig, workers: int) -> CheckResult:
    """SQLite serialises writers across processes; several workers queue on one file lock."""
    if config.database_backend != "sqlite":
        return CheckResult("sqlite", "ok", f"central database is {config.database_backend}")
    if workers > 1:
        return CheckResult(
            "sqlite",
            "warn",
            f"SQLite with {workers} workers: writes from every process wait on one file lock",
            "use PostgreSQL or MariaDB/MySQL in production, or run one worker",
        )
    return CheckResult("sqlite", "ok", "SQLite with one worker")


def check_health_path(config: TenancyConfig) -> CheckResult:
    """Probes reach the health endpoints without naming a tenant."""
    exclusions = PathExclusions(config.excluded_paths)
    missing = [path for path in HEALTH_PATHS if not exclusions.matches(path)]
    if not missing:
        return CheckResult("health", "ok", "/health/live and /health/ready need no tenant")
    return CheckResult(
        "health",
        "warn",
        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in excluded_paths: "
        "liveness and readiness probes get 404",
        "add /health/* to TENANCY_EXCLUDED_PATHS",
    )


def check_echo(config: TenancyConfig) -> CheckResult:
    """Echo logs every statement, slowly, with tenant data in it."""
    if not config.database_echo:
        return CheckResult("echo", "ok", "SQL echo is off")
    return CheckResult(
        "echo",
        "warn",
        "database_echo is on: every SQL statement is logged",
        "set TENANCY_DATABASE_ECHO=false",
    )


def check_shared_state(config: TenancyConfig, workers: int) -> CheckResult:
    """Without Redis, each process caches tenants and counts rate limits on its own."""
    if workers <= 1 or config.redis_url is not None:
        return CheckResult("redis", "ok", "no state needs sharing between workers")
    problems = []
    if config.cache_enabled:
        problems.append(
            f"a suspension or deletion made through one worker reaches the other {workers - 1} "
            f"only when their cached copy expires (cache_ttl={config.cache_ttl:g} s)"
        )
    if config.enable_rate_limiting:
        problems.append(
            f"rate limits are counted per process: {workers} workers admit {workers}x the limit"
        )
    if not problems:
        return CheckResult("redis", "ok", "no state needs sharing between workers")
    return CheckResult(
        "redis",
        "warn",
        "; ".join(problems),
        "set TENANCY_REDIS_URL so every worker shares the tenant cache, its invalidations and "
        "the rate-limit counts",
    )


def check_engine_cache(config: TenancyConfig, tenant_count: int | None) -> CheckResult:
    """Under database isolation, the engine cache holds every tenant's engine."""
    if config.isolation_strategy != "database":
        return CheckResult(
            "engines", "ok", f"{config.isolation_strategy} isolation keeps no tenant engines"
        )
    limit = config.max_cached_engines
    if tenant_count is None:
        return CheckResult(
            "engines",
            "warn",
            f"max_cached_engines {limit}; the tenant count could not be read",
            "make the database reachable and rerun",
        )
    if limit < tenant_count:
        return CheckResult(
            "engines",
            "warn",
            f"max_cached_engines {limit} < {tenant_count} tenants: engines are evicted and "
            "reopened under load",
            f"raise TENANCY_MAX_CACHED_ENGINES to at least {tenant_count} if the connection "
            "budget allows",
        )
    return CheckResult("engines", "ok", f"max_cached_engines {limit} >= {tenant_count} tenants")


def check_row_level_security(
    config: TenancyConfig, problems: tuple[RlsProblem, ...] | None
) -> CheckResult:
    """With row-level security on, PostgreSQL really applies it to the app's role and tables."""
    if not config.row_level_security:
        return CheckResult("rls", "ok", "row-level security is off")
    if problems is None:
        return CheckResult(
            "rls",
            "warn",
            "row-level security is on; the role and tables could not be read",
            "make the database reachable and rerun",
        )
    if problems:
        fixes = dict.fromkeys(problem.fix for problem in problems)
        return CheckResult(
            "rls",
            "fail",
            "; ".join(problem.message for problem in problems),
            "; ".join(fixes),
        )
    return CheckResult(
        "rls", "ok", "PostgreSQL enforces the tenant policies for the app's role on every table"
    )


def check_row_isolation_wall(config: TenancyConfig) -> CheckResult:
    """Row isolation on PostgreSQL has row-level security beneath the ORM filter."""
    if config.isolation_strategy != "row" or config.database_backend != "postgresql":
        return CheckResult("row-rls", "ok", "not row isolation on PostgreSQL")
    if config.row_level_security:
        return CheckResult("row-rls", "ok", "row isolation is backed by row-level security")
    return CheckResult(
        "row-rls",
        "warn",
        "row isolation on PostgreSQL without row-level security: raw SQL (text()) and Core "
        "statements on Table objects reach every tenant's rows",
        "set TENANCY_ROW_LEVEL_SECURITY=true and put the tenant tables under the policy with "
        "`fastapi-tenancy rls enable` (docs/isolation.md, Row-level security)",
    )


def check_adopted_rows(
    config: TenancyConfig, unowned: tuple[UnownedRows, ...] | None
) -> CheckResult:
    """Row isolation: every tenant table's rows have a tenant, and ``tenant_id`` refuses NULL.

    A row without a tenant is served to no tenant (``tenant_id = :id`` never matches NULL), so
    the app may serve while an adoption (docs/adopting.md) is under way; the doctor fails until
    it is finished, and warns until the column is NOT NULL.
    """
    if config.isolation_strategy != "row":
        return CheckResult("adopted", "ok", "not row isolation")
    if unowned is None:
        return CheckResult(
            "adopted", "warn", "the tenant tables could not be read", "make the database reachable"
        )
    hidden = [row.table for row in unowned if row.hidden]
    if hidden:
        return CheckResult(
            "adopted",
            "warn",
            f"row-level security hides rows without a tenant from this role in {', '.join(hidden)}",
            "count them as a role with BYPASSRLS: doctor --database-url URL",
        )
    orphans = [row for row in unowned if row.rows]
    if orphans:
        counts = ", ".join(f"{row.table} {row.rows}" for row in orphans)
        return CheckResult(
            "adopted",
            "fail",
            f"rows no tenant sees (tenant_id is NULL): {counts}",
            "give them to a tenant with `fastapi-tenancy tenants adopt IDENTIFIER` "
            "(docs/adopting.md)",
        )
    if unowned:
        names = ", ".join(row.table for row in unowned)
        return CheckResult(
            "adopted",
            "warn",
            f"tenant_id accepts NULL in {names}",
            "make it NOT NULL with fastapi_tenancy.migrations.ops.enforce_tenant_column in a "
            "migration (docs/adopting.md)",
        )
    return CheckResult("adopted", "ok", "every tenant table's rows have a tenant")


def check_database(facts: ServerFacts) -> CheckResult:
    if facts.reachable:
        latency = f" in {_ms(facts.seconds)}" if facts.seconds is not None else ""
        return CheckResult("database", "ok", f"central database answers{latency}")
    return CheckResult(
        "database",
        "fail",
        facts.error or "central database is unreachable",
        "check TENANCY_DATABASE_URL, the server, the network and the credentials",
    )


def run_checks(config: TenancyConfig, workers: int, facts: ServerFacts) -> list[CheckResult]:
    """Every check, in the order ``doctor`` prints them; the config has already loaded."""
    return [
        check_config(None),
        check_unknown_settings(config),
        check_database(facts),
        check_tenant_storage(config, facts.storage_mismatch),
        check_tenant_urls(config, facts.tenant_identifiers),
        check_redis_server(config, facts.redis),
        check_jwks_server(config, facts.jwks),
        check_jwt(config),
        check_ssl(config),
        check_pool(config, workers, facts.max_connections),
        check_sqlite_workers(config, workers),
        check_health_path(config),
        check_echo(config),
        check_shared_state(config, workers),
        check_engine_cache(config, facts.tenant_count),
        check_row_level_security(config, facts.rls_problems),
        check_row_isolation_wall(config),
        check_adopted_rows(config, facts.unowned),
    ]

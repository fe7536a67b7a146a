"""`TenancyConfig`: every setting of the library, read from ``TENANCY_*`` environment variables.

This is the only module that reads the environment. Settings that cannot work together are
rejected here, when the config is built, with a message that says what to change.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import MetaData

from fastapi_tenancy.exceptions import ConfigurationError

__all__ = ["ResolutionStrategy", "TenancyConfig"]

ResolutionStrategy = Literal["header", "subdomain", "jwt", "path"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# An HMAC key shorter than the hash output weakens the signature (RFC 7518, section 3.2).
HMAC_MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
HMAC_ALGORITHMS = frozenset(HMAC_MIN_SECRET_BYTES)
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Values copied from tutorials and .env templates; a token signed with one of them is forgeable.
PLACEHOLDER_SECRET_PREFIXES = (
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "replace_me",
    "your-secret",
    "your_secret",
    "yoursecret",
    "secret",
    "placeholder",
    "example",
    "dummy",
    "insecure",
)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        env_prefix="TENANCY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        arbitrary_types_allowed=True,
        validate_default=True,
    )

    # Central database: the tenants table, and tenant data under row isolation.
    database_url: str = Field(default="sqlite+aiosqlite:///./tenancy.db", repr=False)
    database_pool_size: int = Field(default=5, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    database_pool_timeout: float = Field(default=30.0, gt=0)
    database_pool_recycle: int = Field(default=1800, ge=-1)
    database_pool_pre_ping: bool = True
    database_echo: bool = False
    database_pgbouncer: bool = False

    # ① Resolution: one strategy, or several tried in order ("header,jwt").
    resolution_strategy: Annotated[tuple[ResolutionStrategy, ...], NoDecode] = ("header",)
    tenant_header_name: str = Field(default="X-Tenant-ID", min_length=1)
    domain_suffix: str | None = None
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    tenant_path_prefix: str = ""
    jwt_secret: SecretStr | None = None
    jwt_algorithm: str = "HS256"
    jwt_tenant_claim: str = Field(default="tenant", min_length=1)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = Field(default=10.0, ge=0, le=300)
    # Asymmetric tokens can name their key by "kid" in a JWKS instead of one pinned public key.
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_interval: float = Field(default=300.0, gt=0)
    jwt_jwks_min_refresh_interval: float = Field(default=10.0, ge=0)
    excluded_paths: Annotated[tuple[str, ...], NoDecode] = (
        "/health",
        "/docs",
        "/redoc",
        "/openapi.json",
    )

    # ② Lookup: in-process LRU+TTL cache (L1) in front of Redis (L2, when redis_url is set) and
    # the store; invalidations travel over Redis pub/sub.
    cache_enabled: bool = True
    cache_ttl: float = Field(default=60.0, gt=0)
    cache_negative_ttl: float = Field(default=5.0, ge=0)
    cache_max_size: int = Field(default=10_000, ge=1)
    cache_key_prefix: str = Field(default="fastapi_tenancy", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    # ③ Rate limiting, and the Redis server that shares it between processes.
    redis_url: SecretStr | None = Field(default=None, repr=False)
    redis_timeout: float = Field(default=1.0, gt=0)
    enable_rate_limiting: bool = False
    rate_limit_per_minute: int = Field(default=600, ge=1)
    rate_limit_plans: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    rate_limit_fail_closed: bool = True

    # ⑤ Isolation.
    isolation_strategy: Literal["row", "schema", "database"] = "row"
    tenant_metadata: str | MetaData | None = None
    # Row isolation on PostgreSQL: policies enforce the tenant on raw SQL too.
    row_level_security: bool = False
    schema_prefix: str = Field(default="tenant_", pattern=r"^[a-z][a-z0-9_]{0,19}$")
    schema_binding: Literal["auto", "search_path", "translate_map"] = "auto"
    # Database per tenant: where each tenant's database is, and how many engines stay open.
    database_url_template: str | None = Field(default=None, repr=False)
    max_cached_engines: int = Field(default=100, ge=1)
    tenant_pool_size: int = Field(default=2, ge=1)
    database_connection_budget: int = Field(default=50, ge=1)

    # Lifecycle and audit.
    enable_soft_delete: bool = True
    enable_audit_logging: bool = False

    # ⑥ Observability: Prometheus metrics and the slow-query log.
    enable_metrics: bool = False
    metrics_tenant_label: bool = False
    metrics_tenant_label_limit: int = Field(default=20, ge=1)
    slow_query_threshold_ms: float | None = Field(default=None, ge=0)

    @field_validator("resolution_strategy", "trusted_proxies", "excluded_paths", mode="before")
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
        paths = []
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"excluded path {path!r} must start with '/'")
            paths.append(path.rstrip("/") or "/")
        return tuple(paths)

    @field_validator("tenant_path_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("tenant_path_prefix must be empty or start with '/'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
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
        if "subdomain" in strategies and self.domain_suffix is None:
            raise ConfigurationError(
                "resolution_strategy 'subdomain' needs TENANCY_DOMAIN_SUFFIX "
                "(for example 'example.com', so 'acme.example.com' names tenant 'acme')"
            )
        if "jwt" in strategies:
            self._check_jwt()
        if self.database_url_template is not None and "{database}" not in (
            self.database_url_template
        ):
            raise ConfigurationError(
                "database_url_template needs a '{database}' placeholder, e.g. "
                "'postgresql+asyncpg://app@db:5432/{database}'"
            )
        if self.database_connection_budget < self.tenant_pool_size:
            raise ConfigurationError(
                "database_connection_budget must be at least tenant_pool_size: one tenant's pool "
                "could never fill"
            )
        if self.schema_binding == "search_path" and self.database_backend != "postgresql":
            raise ConfigurationError(
                "schema_binding 'search_path' exists on PostgreSQL only; MariaDB/MySQL use "
                "'translate_map' (or leave it 'auto')"
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

    def _check_jwks(self) -> None:
        url = self.jwt_jwks_url or ""
        if self.jwt_secret is not None:
            raise ConfigurationError(
                "set either TENANCY_JWT_SECRET (one key) or TENANCY_JWT_JWKS_URL (keys chosen by "
                "kid), not both"
            )
        if self.jwt_algorithm not in ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(
                f"TENANCY_JWT_JWKS_URL publishes public keys; jwt_algorithm {self.jwt_algorithm} "
                "is not asymmetric (use e.g. RS256 or ES256)"
            )
        parts = urlsplit(url)
        local = parts.scheme == "http" and _is_loopback(parts.hostname)
        if parts.scheme != "https" and not local:
            # Keys fetched over plain HTTP can be swapped in transit, and with them any token.
            raise ConfigurationError("TENANCY_JWT_JWKS_URL must be an https:// URL")

    def _check_jwt(self) -> None:
        algorithm = self.jwt_algorithm
        if algorithm not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(
                f"jwt_algorithm {algorithm!r} is not supported; use one of "
                f"{', '.join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))}"
            )
        if self.jwt_jwks_url is not None:
            self._check_jwks()
            return
        if self.jwt_secret is None or not self.jwt_secret.get_secret_value().strip():
            raise ConfigurationError(
                "resolution_strategy 'jwt' needs TENANCY_JWT_SECRET: the HMAC secret for HS* "
                "algorithms, or the PEM public key for RS*/PS*/ES*/EdDSA"
            )
        if algorithm in HMAC_ALGORITHMS:
            secret = self.jwt_secret.get_secret_value()
            minimum = HMAC_MIN_SECRET_BYTES[algorithm]
            if len(secret.encode()) < minimum:
                raise ConfigurationError(
                    f"TENANCY_JWT_SECRET is shorter than {minimum} bytes, the minimum for "
                    f"{algorithm}; generate one with: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(64))'"
                )
            lowered = secret.strip().lower()
            if lowered.startswith(PLACEHOLDER_SECRET_PREFIXES) or len(set(secret)) < 8:
                raise ConfigurationError(
                    "TENANCY_JWT_SECRET looks like a placeholder; generate a real one with: "
                    "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                )
        else:
            key = self.jwt_secret.get_secret_value()
            if "-----BEGIN" not in key or "PRIVATE KEY" in key:
                raise ConfigurationError(
                    f"jwt_algorithm {algorithm} verifies with a public key: set "
                    "TENANCY_JWT_SECRET to the PEM-encoded public key (never the private key)"
                )

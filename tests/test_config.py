"""`TenancyConfig`: environment parsing and the combinations refused at start-up."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from fastapi_tenancy import ConfigurationError, TenancyConfig

STRONG_SECRET = "n4Jx2Qp8Vt6Ws0Yr3Lk7Hm1Gf5Dc9Bz-AeXuTq"


def test_defaults_need_no_server() -> None:
    config = TenancyConfig(database_url="sqlite+aiosqlite:///./tenancy.db")
    assert config.resolution_strategy == ("header",)
    assert config.tenant_header_name == "X-Tenant-ID"
    assert config.isolation_strategy == "row"
    assert "/health" in config.excluded_paths


def test_default_database_is_a_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANCY_DATABASE_URL")
    assert TenancyConfig().database_url == "sqlite+aiosqlite:///./tenancy.db"


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_RESOLUTION_STRATEGY", "header, path")
    monkeypatch.setenv("TENANCY_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
    monkeypatch.setenv("TENANCY_EXCLUDED_PATHS", "/health/,/metrics")
    config = TenancyConfig()
    assert config.resolution_strategy == ("header", "path")
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert config.excluded_paths == ("/health", "/metrics")


def test_json_lists_are_accepted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_EXCLUDED_PATHS", '["/a", "/b"]')
    assert TenancyConfig().excluded_paths == ("/a", "/b")


def test_jwt_secret_is_never_printed() -> None:
    config = TenancyConfig(resolution_strategy="jwt", jwt_secret=STRONG_SECRET)
    assert STRONG_SECRET not in repr(config)
    assert STRONG_SECRET not in str(config)


def test_database_password_is_not_in_repr() -> None:
    config = TenancyConfig(database_url="postgresql+asyncpg://app:hunter2@db/app")
    assert "hunter2" not in repr(config)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"resolution_strategy": "jwt"}, "needs TENANCY_JWT_SECRET", id="no-secret"),
        pytest.param(
            {"resolution_strategy": "jwt", "jwt_secret": "short"}, "shorter than 32", id="short"
        ),
        pytest.param(
            {"resolution_strategy": "jwt", "jwt_secret": "change-me-" + "x1y2z3w4" * 4},
            "placeholder",
            id="placeholder",
        ),
        pytest.param(
            {"resolution_strategy": "jwt", "jwt_secret": "a" * 40}, "placeholder", id="repetitive"
        ),
        pytest.param(
            {"resolution_strategy": "jwt", "jwt_secret": STRONG_SECRET, "jwt_algorithm": "none"},
            "not supported",
            id="alg-none",
        ),
        pytest.param(
            {"resolution_strategy": "jwt", "jwt_secret": STRONG_SECRET, "jwt_algorithm": "RS256"},
            "PEM",
            id="rs256-without-key",
        ),
        pytest.param(
            {"resolution_strategy": "jwt", "jwt_secret": STRONG_SECRET, "jwt_algorithm": "HS512"},
            "minimum for HS512",
            id="hs512-needs-64-bytes",
        ),
        pytest.param(
            {
                "resolution_strategy": "jwt",
                "jwt_algorithm": "RS256",
                "jwt_secret": "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----",
            },
            "never the private key",
            id="private-key",
        ),
        pytest.param({"resolution_strategy": "subdomain"}, "DOMAIN_SUFFIX", id="no-suffix"),
        pytest.param(
            {"isolation_strategy": "schema", "database_url": "sqlite+aiosqlite:///x.db"},
            "needs PostgreSQL or MariaDB",
            id="schema-on-sqlite",
        ),
    ],
)
def test_unworkable_combinations_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TenancyConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [
        {"resolution_strategy": "carrier-pigeon"},
        {"resolution_strategy": "header,header"},
        {"excluded_paths": "health"},
        {"tenant_path_prefix": "t"},
        {"isolation_strategy": "table"},
        {"schema_prefix": "Bad-Prefix"},
        {"cache_ttl": 0},
        {"database_pool_size": 0},
    ],
)
def test_invalid_values_are_rejected(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TenancyConfig(**settings)  # type: ignore[arg-type]

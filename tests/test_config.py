"""`TenancyConfig`: environment parsing and the combinations refused at start-up."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from fastapi_tenancy import ConfigurationError, TenancyConfig

STRONG_SECRET = "n4Jx2Qp8Vt6Ws0Yr3Lk7Hm1Gf5Dc9Bz-AeXuTq"


def test_defaults_need_no_server() -> None:
    config = TenancyConfig(database_url="sqlite+aiosqlite:///./tenancy.db")
    assert config.resolution_strategy == ("header",)
    assert config.tenant_header_name == "X-Tenant-ID"
    assert config.isolation_strategy == "row"
    assert config.excluded_paths == (
        "/health/*",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    )


def test_default_database_is_a_local_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANCY_DATABASE_URL")
    assert TenancyConfig().database_url == "sqlite+aiosqlite:///./tenancy.db"


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANCY_RESOLUTION_STRATEGY", "header, path")
    monkeypatch.setenv("TENANCY_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
    monkeypatch.setenv("TENANCY_EXCLUDED_PATHS", "/health/*,/metrics/")
    config = TenancyConfig()
    assert config.resolution_strategy == ("header", "path")
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert config.excluded_paths == ("/health/*", "/metrics")


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
        {"excluded_paths": "/health*"},
        {"excluded_paths": "/*/items"},
        {"tenant_path_prefix": "t"},
        {"isolation_strategy": "table"},
        {"schema_prefix": "Bad-Prefix"},
        {"cache_ttl": 0},
        {"database_pool_size": 0},
    ],
)
def test_invalid_values_are_rejected_naming_the_variable(settings: dict[str, object]) -> None:
    (field,) = settings
    with pytest.raises(ConfigurationError) as refused:
        TenancyConfig(**settings)  # type: ignore[arg-type]
    assert f"TENANCY_{field.upper()}:" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_invalid_environment_variable_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", "rows")
    with pytest.raises(ConfigurationError) as refused:
        TenancyConfig()
    message = str(refused.value)
    assert message == (
        "invalid configuration: TENANCY_ISOLATION_STRATEGY: Input should be 'row', 'schema' or "
        "'database'"
    )


def test_a_secret_is_never_echoed_in_a_validation_error() -> None:
    with pytest.raises(ConfigurationError) as refused:
        TenancyConfig(redis_url="http://:hunter2-secret@cache:6379")
    assert "TENANCY_REDIS_URL" in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_misspelt_keyword_is_refused_with_the_closest_setting() -> None:
    with pytest.raises(ConfigurationError) as refused:
        TenancyConfig(rate_limit_per_minut=5)
    assert str(refused.value) == (
        "TenancyConfig has no setting 'rate_limit_per_minut' (did you mean rate_limit_per_minute?)"
    )


def test_a_misspelt_environment_variable_warns_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TENANCY_ISOLATON_STRATEGY", "schema")
    monkeypatch.setenv("TENANCY_TEST_ANYTHING", "the test suite's own")
    monkeypatch.setenv("TENANCY_SOAK_SECONDS", "5")
    with caplog.at_level("WARNING", logger="fastapi_tenancy"):
        config = TenancyConfig()
    expected = (
        "environment variable TENANCY_ISOLATON_STRATEGY is not a fastapi-tenancy setting and is "
        "ignored (did you mean TENANCY_ISOLATION_STRATEGY?)"
    )
    assert config.unknown_settings == (expected,)
    assert [record.getMessage() for record in caplog.records] == [expected]
    assert config.isolation_strategy == "row"


def test_a_misspelt_dotenv_entry_warns_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "TENANCY_RATE_LIMIT_PER_MINUT=5\nOTHER_APP_SETTING=1\nTENANCY_CACHE_TTL=30\n"
    )
    with caplog.at_level("WARNING", logger="fastapi_tenancy"):
        config = TenancyConfig()
    assert config.cache_ttl == 30
    assert config.unknown_settings == (
        ".env entry TENANCY_RATE_LIMIT_PER_MINUT is not a fastapi-tenancy setting and is ignored "
        "(did you mean TENANCY_RATE_LIMIT_PER_MINUTE?)",
    )
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://app@db/app", "postgresql:// names no driver; use postgresql+asyncpg://"),
        ("postgresql+psycopg2://app@db/app", "psycopg2 is a synchronous driver; use postgresql+"),
        ("mysql://app@db/app", "mysql:// names no driver; use mysql+aiomysql://"),
        ("mysql+pymysql://app@db/app", "pymysql is a synchronous driver; use mysql+aiomysql://"),
        ("sqlite:///./app.db", "sqlite:// names no driver; use sqlite+aiosqlite://"),
        ("sqlite+pysqlite:///./app.db", "pysqlite is a synchronous driver; use sqlite+aiosqlite"),
        ("mongodb://db/app", "not a supported database URL"),
    ],
)
def test_a_url_without_an_async_driver_says_which_to_use(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="TENANCY_DATABASE_URL: " + re.escape(message)):
        TenancyConfig(database_url=url)
    with pytest.raises(ConfigurationError, match="TENANCY_DATABASE_URL_TEMPLATE: "):
        TenancyConfig(
            isolation_strategy="database", database_url_template=url.replace("app", "{database}")
        )

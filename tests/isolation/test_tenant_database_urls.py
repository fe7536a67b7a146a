"""TENANCY_DATABASE_URL_<TENANT>: a tenant's database URL from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import ConfigurationError, Tenancy, TenancyConfig
from fastapi_tenancy.cli.checks import check_tenant_urls
from fastapi_tenancy.cli.doctor import diagnose
from fastapi_tenancy.config import _tenant_urls, tenant_url_variable
from fastapi_tenancy.models import IDENTIFIER_PATTERN
from tests.support.models import Base, Item

identifiers = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True).filter(lambda i: i != "template")


@given(identifiers)
def test_each_identifier_has_one_variable_that_names_it_back(identifier: str) -> None:
    variable = tenant_url_variable(identifier)
    assert variable == variable.upper()
    assert _tenant_urls({variable: "sqlite+aiosqlite:///x.db"}, {}) == {
        identifier: "sqlite+aiosqlite:///x.db"
    }


def test_variables_are_read_validated_and_never_called_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL_ACME_EU", "postgresql+asyncpg://u:hunter2@db/acme")
    monkeypatch.setenv("TENANCY_DATABASE_URL_TEMPLATE", "sqlite+aiosqlite:///./{database}.db")
    config = TenancyConfig()
    assert {k: v.get_secret_value() for k, v in config.tenant_database_urls.items()} == {
        "acme-eu": "postgresql+asyncpg://u:hunter2@db/acme"
    }
    assert config.database_url_template == "sqlite+aiosqlite:///./{database}.db"
    assert config.unknown_settings == ()
    assert "hunter2" not in repr(config)

    monkeypatch.setenv("TENANCY_DATABASE_URL_GLOBEX", "postgresql://u@db/globex")
    with pytest.raises(ConfigurationError, match="TENANCY_DATABASE_URL_GLOBEX"):
        TenancyConfig()
    monkeypatch.delenv("TENANCY_DATABASE_URL_GLOBEX")
    monkeypatch.setenv("TENANCY_DATABASE_URL__BAD", "sqlite+aiosqlite:///bad.db")
    with pytest.raises(ConfigurationError, match="no valid tenant identifier"):
        TenancyConfig()


def sqlite_config(tmp_path: Path) -> TenancyConfig:
    (tmp_path / "tenants").mkdir()
    return TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        isolation_strategy="database",
        database_url_template=f"sqlite+aiosqlite:///{tmp_path / 'tenants'}/{{database}}.db",
        tenant_metadata=Base.metadata,
    )


async def table_names(path: Path) -> list[str]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return sorted(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_the_environment_url_wins_over_the_stored_one_and_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = tmp_path / "acme-from-env.db"
    stored = tmp_path / "acme-stored.db"
    monkeypatch.setenv("TENANCY_DATABASE_URL_ACME", f"sqlite+aiosqlite:///{from_env}")
    async with Tenancy(sqlite_config(tmp_path)) as tenancy:
        acme = await tenancy.create_tenant("acme", database_url=f"sqlite+aiosqlite:///{stored}")
        globex = await tenancy.create_tenant("globex")
        for identifier in ("acme", "globex"):
            async with tenancy.session(identifier) as session:
                session.add(Item(name=f"{identifier}-item"))
                await session.commit()
        async with tenancy.session("acme") as session:
            assert (await session.scalars(select(Item.name))).all() == ["acme-item"]

        assert "items" in await table_names(from_env)
        assert not stored.exists()
        # globex has no variable: its database comes from the template, as before.
        made = sorted(p.name for p in (tmp_path / "tenants").glob("*.db"))
        assert made == [f"{globex.storage_name}.db"]
        assert acme.storage_name != globex.storage_name

        # The environment's database is the operator's: a purge empties it, never deletes it.
        await tenancy.delete_tenant("acme")
        await tenancy.purge_tenant("acme")
    assert from_env.exists()
    assert "items" not in await table_names(from_env)


def test_doctor_warns_about_a_variable_naming_no_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sqlite_config(tmp_path)
    monkeypatch.setenv("TENANCY_DATABASE_URL_ACME", f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setenv("TENANCY_DATABASE_URL_ACMEE", f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    for name, value in {
        "TENANCY_DATABASE_URL": config.database_url,
        "TENANCY_ISOLATION_STRATEGY": "database",
        "TENANCY_DATABASE_URL_TEMPLATE": str(config.database_url_template),
        "TENANCY_TENANT_METADATA": "tests.support.models:Base.metadata",
    }.items():
        monkeypatch.setenv(name, value)

    async def create() -> None:
        async with Tenancy(TenancyConfig()) as tenancy:
            await tenancy.create_tenant("acme")

    import asyncio

    asyncio.run(create())
    [result] = [r for r in diagnose(None, 1) if r.name == "tenant-urls"]
    assert result.status == "warn"
    assert "TENANCY_DATABASE_URL_ACMEE" in result.message
    assert "TENANCY_DATABASE_URL_ACME," not in result.message

    monkeypatch.delenv("TENANCY_DATABASE_URL_ACMEE")
    assert check_tenant_urls(TenancyConfig(), ("acme",)).status == "ok"
    monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", "row")
    assert check_tenant_urls(TenancyConfig(), ("acme",)).status == "warn"

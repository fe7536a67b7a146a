"""`fastapi_tenancy.testing`: run an app, create tenants, call it as each, reset between tests."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import select

from fastapi_tenancy import ConfigurationError, TenancyConfig
from fastapi_tenancy.config import ResolutionStrategy
from fastapi_tenancy.testing import AppHarness, run_app, tenant_binding
from tests.support import apps
from tests.support.backends import schema_exists
from tests.support.models import Base, Item

JWT_SECRET = secrets.token_urlsafe(48)

STRATEGY_SETTINGS: dict[ResolutionStrategy, dict[str, Any]] = {
    "header": {},
    "subdomain": {"domain_suffix": "example.com"},
    "path": {"tenant_path_prefix": "/t"},
    "jwt": {"jwt_secret": JWT_SECRET},
}


def sqlite_config(tmp_path: Path, **overrides: Any) -> TenancyConfig:
    return TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=Base.metadata,
        **overrides,
    )


async def whoami(harness: AppHarness, identifier: str, **options: Any) -> Any:
    async with harness.client(identifier, **options) as client:
        response = await client.get("/whoami")
        assert response.status_code == 200, response.text
        return response.json()["identifier"]


async def test_run_app_starts_the_runtime_and_closes_it_on_exit(tmp_path: Path) -> None:
    app = apps.create_app(sqlite_config(tmp_path))
    async with run_app(app) as harness:
        assert harness.tenancy is app.state.tenancy
        assert harness.tenancy.started
    assert not harness.tenancy.started


async def test_run_app_refuses_an_app_without_the_middleware() -> None:
    with pytest.raises(ConfigurationError, match="add TenancyMiddleware"):
        async with run_app(FastAPI()):
            pass


@pytest.mark.parametrize("strategy", list(STRATEGY_SETTINGS))
async def test_client_is_bound_to_its_tenant_under_every_resolution_strategy(
    tmp_path: Path, strategy: ResolutionStrategy
) -> None:
    config = sqlite_config(tmp_path, resolution_strategy=strategy, **STRATEGY_SETTINGS[strategy])
    async with run_app(apps.create_app(config)) as harness:
        await harness.create_tenant("acme")
        await harness.create_tenant("globex")
        assert await whoami(harness, "acme") == "acme"
        assert await whoami(harness, "globex") == "globex"
        async with harness.client() as anonymous:
            assert (await anonymous.get("/whoami")).status_code == 404


async def test_client_passes_extra_headers_and_options_to_httpx(tmp_path: Path) -> None:
    async with run_app(apps.create_app(sqlite_config(tmp_path))) as harness:
        await harness.create_tenant("acme")
        async with harness.client("acme", headers={"X-Extra": "1"}, timeout=5) as client:
            assert client.headers["X-Tenant-ID"] == "acme"
            assert client.headers["X-Extra"] == "1"
            assert (await client.get("/whoami")).status_code == 200


async def test_client_signs_asymmetric_tokens_with_the_given_private_key(tmp_path: Path) -> None:
    private_key = ec.generate_private_key(ec.SECP256R1())
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    config = sqlite_config(
        tmp_path,
        resolution_strategy="jwt",
        jwt_algorithm="ES256",
        jwt_secret=public_pem,
        jwt_audience="api",
        jwt_issuer="https://issuer.example",
    )
    async with run_app(apps.create_app(config)) as harness:
        await harness.create_tenant("acme")
        with pytest.raises(ConfigurationError, match="signing_key"):
            harness.client("acme")
        assert await whoami(harness, "acme", signing_key=private_pem) == "acme"


def test_binding_uses_the_chosen_strategy_of_a_chain() -> None:
    config = TenancyConfig(resolution_strategy="header,subdomain", domain_suffix="example.com")
    assert tenant_binding(config, "acme").headers == {"X-Tenant-ID": "acme"}
    assert tenant_binding(config, "acme", via="subdomain").base_url == "http://acme.example.com"
    with pytest.raises(ConfigurationError, match="does not resolve tenants by 'jwt'"):
        tenant_binding(config, "acme", via="jwt")


async def test_reset_removes_tenants_in_every_status_with_their_data(tmp_path: Path) -> None:
    async with run_app(apps.create_app(sqlite_config(tmp_path))) as harness:
        tenancy = harness.tenancy
        for identifier in ("acme", "paused", "gone"):
            await harness.create_tenant(identifier)
        await harness.create_tenant("queued", provision=False)
        await tenancy.suspend_tenant("paused")
        await tenancy.delete_tenant("gone")
        async with tenancy.session("acme") as session:
            session.add(Item(name="old"))
            await session.commit()
        assert await whoami(harness, "acme") == "acme"  # now cached

        await harness.reset()

        assert await tenancy.list_tenants(include_deleted=True) == []
        async with harness.client("acme") as client:
            assert (await client.get("/whoami")).status_code == 404
        await harness.create_tenant("acme")
        async with tenancy.session("acme") as session:
            assert (await session.scalars(select(Item))).all() == []


async def test_reset_empties_the_tenant_cache(tmp_path: Path) -> None:
    async with run_app(apps.create_app(sqlite_config(tmp_path))) as harness:
        async with harness.client("nobody") as client:
            assert (await client.get("/whoami")).status_code == 404  # cached as absent
        assert harness.tenancy.cache is not None
        assert await harness.tenancy.cache.get("nobody") is not None
        await harness.reset()
        assert await harness.tenancy.cache.get("nobody") is None


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_reset_drops_tenant_schemas_under_schema_isolation(database_url: str) -> None:
    config = TenancyConfig(
        database_url=database_url,
        isolation_strategy="schema",
        tenant_metadata=Base.metadata,
    )
    async with run_app(apps.create_app(config)) as harness:
        tenant = await harness.create_tenant("acme")
        await harness.reset()
        async with harness.tenancy.engine.connect() as conn:
            assert not await schema_exists(conn, tenant.storage_name)

"""The principal hook, end to end: the app decides whether the caller belongs to the tenant."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI

from fastapi_tenancy import (
    AuthenticationFailed,
    ConfigurationError,
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    get_current_tenant,
)
from fastapi_tenancy.exceptions import PrincipalNotAllowed, TenantNotFound
from fastapi_tenancy.principal import PrincipalCheck, check_principal
from fastapi_tenancy.resolution import Resolution
from fastapi_tenancy.types import Scope
from tests.support.models import Base

SECRET = secrets.token_urlsafe(48)
NOT_FOUND = {"detail": "Tenant not found"}
# Which subjects belong to which tenant, as the app's own tables would say.
MEMBERS = {"acme": {"alice"}, "globex": {"bob"}}

Call = tuple[str, str | None, str]


def token(tenant: str, subject: str) -> str:
    payload = {"tenant": tenant, "sub": subject, "exp": int(time.time()) + 60}
    return pyjwt.encode(payload, SECRET, algorithm="HS256")


def auth(tenant: str, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant, subject)}"}


def make_app(tmp_path: Path, check: PrincipalCheck | None, **overrides: Any) -> FastAPI:
    settings: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        "tenant_metadata": Base.metadata,
        "resolution_strategy": "header,jwt",
        "jwt_secret": SECRET,
    }
    app = FastAPI()
    app.add_middleware(
        TenancyMiddleware, config=TenancyConfig(**(settings | overrides)), principal_check=check
    )

    @app.get("/whoami")
    async def whoami(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"identifier": tenant.identifier}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def calls() -> list[Call]:
    return []


def membership(calls: list[Call]) -> PrincipalCheck:
    async def is_member(tenant: Tenant, resolution: Resolution, scope: Scope) -> bool:
        subject = (resolution.claims or {}).get("sub")
        calls.append((tenant.identifier, subject, scope["path"]))
        return subject in MEMBERS.get(tenant.identifier, set())

    return is_member


@pytest.fixture
async def client(tmp_path: Path, calls: list[Call]) -> AsyncIterator[httpx.AsyncClient]:
    async with served(make_app(tmp_path, membership(calls))) as client:
        yield client


class served:
    """The app with its lifespan running and tenants acme, globex (active) and initech."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.lifespan = LifespanManager(app)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.lifespan.__aenter__()
        tenancy: Tenancy = self.app.state.tenancy
        for identifier in ("acme", "globex", "initech"):
            await tenancy.create_tenant(identifier)
        await tenancy.suspend_tenant("initech")
        transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        return self.client

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()
        await self.lifespan.__aexit__(None, None, None)


async def test_member_reaches_the_app(client: httpx.AsyncClient, calls: list[Call]) -> None:
    response = await client.get("/whoami", headers=auth("acme", "alice"))
    assert response.status_code == 200
    assert response.json() == {"identifier": "acme"}
    assert calls == [("acme", "alice", "/whoami")]


async def test_non_member_gets_the_same_404_as_an_unknown_tenant(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.get("/whoami", headers=auth("globex", "alice"))
    unknown = await client.get("/whoami", headers=auth("nobody", "alice"))
    assert refused.status_code == unknown.status_code == 404
    assert refused.json() == unknown.json() == NOT_FOUND
    assert refused.headers.keys() == unknown.headers.keys()


async def test_hook_is_not_asked_about_unknown_or_suspended_tenants(
    client: httpx.AsyncClient, calls: list[Call]
) -> None:
    assert (await client.get("/whoami", headers=auth("nobody", "alice"))).status_code == 404
    assert (await client.get("/whoami", headers=auth("initech", "alice"))).status_code == 403
    assert calls == []


async def test_hook_is_not_asked_about_excluded_paths(
    client: httpx.AsyncClient, calls: list[Call]
) -> None:
    assert (await client.get("/health")).status_code == 200
    assert calls == []


async def test_request_without_a_principal_is_refused_by_the_hook(
    client: httpx.AsyncClient, calls: list[Call]
) -> None:
    # The header names acme, but no token says who is asking.
    response = await client.get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 404
    assert calls == [("acme", None, "/whoami")]


async def test_header_and_token_naming_different_tenants_are_unauthorized(
    client: httpx.AsyncClient, calls: list[Call]
) -> None:
    headers = {"X-Tenant-ID": "globex", **auth("acme", "alice")}
    response = await client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert calls == []
    agreeing = {"X-Tenant-ID": "acme", **auth("acme", "alice")}
    assert (await client.get("/whoami", headers=agreeing)).status_code == 200


@pytest.mark.parametrize(
    ("check", "status"),
    [
        pytest.param(lambda tenant, resolution, scope: True, 200, id="sync-true"),
        pytest.param(lambda tenant, resolution, scope: False, 404, id="sync-false"),
        pytest.param(lambda tenant, resolution, scope: None, 404, id="forgot-to-return"),
        pytest.param(lambda tenant, resolution, scope: 1, 404, id="truthy-but-not-true"),
    ],
)
async def test_only_an_explicit_true_lets_the_request_through(
    tmp_path: Path, check: Callable[..., Any], status: int
) -> None:
    async with served(make_app(tmp_path, check)) as client:
        response = await client.get("/whoami", headers=auth("acme", "alice"))
    assert response.status_code == status


async def test_tenancy_error_raised_by_the_hook_keeps_its_status(tmp_path: Path) -> None:
    def no_principal(tenant: Tenant, resolution: Resolution, scope: Scope) -> bool:
        raise AuthenticationFailed("no session cookie")

    async with served(make_app(tmp_path, no_principal)) as client:
        response = await client.get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert "cookie" not in response.text


async def test_refused_callers_never_spend_the_tenants_rate_limit(
    tmp_path: Path, calls: list[Call]
) -> None:
    app = make_app(tmp_path, membership(calls), enable_rate_limiting=True, rate_limit_per_minute=1)
    async with served(app) as client:
        for _ in range(3):
            refused = await client.get("/whoami", headers=auth("acme", "mallory"))
            assert refused.status_code == 404
        assert (await client.get("/whoami", headers=auth("acme", "alice"))).status_code == 200
        assert (await client.get("/whoami", headers=auth("acme", "alice"))).status_code == 429


async def test_check_principal_raises_a_not_found_error() -> None:
    tenant = Tenant(identifier="acme")
    with pytest.raises(PrincipalNotAllowed) as refused:
        await check_principal(lambda *_: False, tenant, Resolution("acme"), {})
    assert isinstance(refused.value, TenantNotFound)
    assert refused.value.status_code == 404
    assert refused.value.public_detail == TenantNotFound.public_detail


async def test_a_shared_runtime_takes_the_hook_itself(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=Tenancy(config), principal_check=lambda *_: True)
    with pytest.raises(ConfigurationError, match="principal_check"):
        async with LifespanManager(app):
            pass

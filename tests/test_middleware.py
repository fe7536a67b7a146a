"""End to end through the ASGI interface: lifespan, the error contract, exclusions, websockets."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.pool import QueuePool

from fastapi_tenancy import ServiceUnavailable, Tenancy, TenancyConfig, TenancyMiddleware
from fastapi_tenancy.testing import run_app
from tests.support import apps
from tests.support.models import Base

NOT_FOUND = {"detail": "Tenant not found"}


def sqlite_config(tmp_path: Path, **overrides: Any) -> TenancyConfig:
    return TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        tenant_metadata=Base.metadata,
        **overrides,
    )


async def seed(tenancy: Tenancy) -> None:
    for identifier in ("acme", "globex", "initech", "gone"):
        await tenancy.create_tenant(identifier)
    await tenancy.suspend_tenant("initech")
    await tenancy.delete_tenant("gone")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = apps.create_app(sqlite_config(tmp_path))
    async with run_app(app) as harness:
        await seed(harness.tenancy)
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_lifespan_exposes_runtime_and_closes_it(tmp_path: Path) -> None:
    app = apps.create_app(sqlite_config(tmp_path))
    async with LifespanManager(app):
        tenancy = app.state.tenancy
        assert isinstance(tenancy, Tenancy)
        assert tenancy.started
    assert not tenancy.started


async def test_startup_fails_clearly_when_central_database_is_unreachable() -> None:
    config = TenancyConfig(database_url="postgresql+asyncpg://u:hunter2@127.0.0.1:1/x")
    app = apps.create_app(config)
    messages: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop()

    async def send(message: Any) -> None:
        messages.append(message)

    with pytest.raises(ServiceUnavailable) as failure:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert messages[0]["type"] == "lifespan.startup.failed"
    assert messages[0]["message"].startswith("fastapi-tenancy: ")
    assert "hunter2" not in messages[0]["message"] + str(failure.value)


async def test_known_tenant_reaches_the_app(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 200
    assert response.json() == {"identifier": "acme", "state": "acme", "root_path": ""}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-identifier"),
        pytest.param({"X-Tenant-ID": "Not Valid!"}, id="malformed"),
        pytest.param({"X-Tenant-ID": "nobody"}, id="unknown"),
        pytest.param({"X-Tenant-ID": "gone"}, id="soft-deleted"),
    ],
)
async def test_every_missing_tenant_gets_one_identical_404(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/items", headers=headers)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_suspended_tenant_gets_generic_403(client: httpx.AsyncClient) -> None:
    response = await client.get("/items", headers={"X-Tenant-ID": "initech"})
    assert response.status_code == 403
    assert response.json() == {"detail": "Forbidden"}
    assert "suspend" not in response.text


async def test_lifecycle_changes_take_effect_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    tenancy: Tenancy = app.state.tenancy
    headers = {"X-Tenant-ID": "globex"}
    assert (await client.get("/items", headers=headers)).status_code == 200  # now cached
    await tenancy.suspend_tenant("globex")
    assert (await client.get("/items", headers=headers)).status_code == 403
    await tenancy.activate_tenant("globex")
    assert (await client.get("/items", headers=headers)).status_code == 200
    await tenancy.delete_tenant("globex")
    assert (await client.get("/items", headers=headers)).status_code == 404
    await tenancy.restore_tenant("globex")
    assert (await client.get("/items", headers=headers)).status_code == 200


async def test_new_tenant_is_served_despite_earlier_negative_cache(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = {"X-Tenant-ID": "newco"}
    assert (await client.get("/items", headers=headers)).status_code == 404
    await app.state.tenancy.create_tenant("newco")
    assert (await client.get("/items", headers=headers)).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/health/", "/docs", "/openapi.json"])
async def test_excluded_paths_need_no_tenant(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, follow_redirects=True)
    assert response.status_code == 200


async def test_exclusion_matches_whole_segments_only(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 404
    assert (await client.get("/healthz", headers={"X-Tenant-ID": "acme"})).status_code == 200


async def test_app_http_exceptions_pass_through_unchanged(client: httpx.AsyncClient) -> None:
    response = await client.get("/teapot", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 418
    assert response.json() == {"detail": "short and stout"}


async def test_background_tasks_run_as_the_requests_tenant(client: httpx.AsyncClient) -> None:
    apps.background_seen.clear()
    response = await client.get("/background", headers={"X-Tenant-ID": "globex"})
    assert response.status_code == 200
    assert apps.background_seen == ["globex"]


async def test_runtime_opens_on_first_request_without_lifespan(tmp_path: Path) -> None:
    app = apps.create_app(sqlite_config(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/items", headers={"X-Tenant-ID": "acme"})
        assert response.status_code == 404
        tenancy = app.state.tenancy if hasattr(app.state, "tenancy") else None
    middleware = _tenancy_middleware(app)
    assert middleware.tenancy.started
    assert tenancy is None  # no lifespan ran, so app.state was never set
    await middleware.tenancy.close()


async def test_unreachable_store_answers_503_without_details(tmp_path: Path) -> None:
    config = TenancyConfig(database_url="postgresql+asyncpg://u:hunter2@127.0.0.1:1/x")
    app = apps.create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/items", headers={"X-Tenant-ID": "acme"})
    assert response.status_code == 503
    assert response.json() == {"detail": "Service unavailable"}
    await _tenancy_middleware(app).tenancy.close()


async def test_path_strategy_hides_the_tenant_segment_from_routes(tmp_path: Path) -> None:
    app = apps.create_app(sqlite_config(tmp_path, resolution_strategy="path"))
    async with LifespanManager(app):
        await seed(app.state.tenancy)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/acme/whoami")
            assert response.status_code == 200
            assert response.json() == {"identifier": "acme", "state": "acme", "root_path": "/acme"}
            assert (await client.get("/nobody/whoami")).status_code == 404
            assert (await client.get("/health")).status_code == 200


async def websocket_session(app: FastAPI, headers: dict[str, str]) -> list[dict[str, Any]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            await inbox.put({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
    }
    await asyncio.wait_for(app(scope, inbox.get, send), timeout=10)
    return sent


async def test_websocket_for_known_tenant_is_accepted(app: FastAPI) -> None:
    sent = await websocket_session(app, {"X-Tenant-ID": "acme"})
    assert sent[0]["type"] == "websocket.accept"
    assert '"identifier":"acme"' in sent[1]["text"]


@pytest.mark.parametrize(
    ("identifier", "code"), [("nobody", 1008), ("initech", 1008), ("Bad Id", 1008)]
)
async def test_websocket_tenant_errors_close_with_policy_violation(
    app: FastAPI, identifier: str, code: int
) -> None:
    sent = await websocket_session(app, {"X-Tenant-ID": identifier})
    assert sent == [{"type": "websocket.close", "code": code, "reason": ""}]


def _tenancy_middleware(app: FastAPI) -> TenancyMiddleware:
    stack: Any = app.middleware_stack
    while stack is not None and not isinstance(stack, TenancyMiddleware):
        stack = getattr(stack, "app", None)
    assert isinstance(stack, TenancyMiddleware)
    return stack


async def test_jwt_strategy_answers_generic_401_for_bad_tokens(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(48)
    app = apps.create_app(sqlite_config(tmp_path, resolution_strategy="jwt", jwt_secret=secret))
    now = int(time.time())
    good = pyjwt.encode({"tenant": "acme", "exp": now + 60}, secret, "HS256")
    expired = pyjwt.encode({"tenant": "acme", "exp": now - 60}, secret, "HS256")
    forged = pyjwt.encode({"tenant": "acme", "exp": now + 60}, "x" * 48, "HS256")
    async with LifespanManager(app):
        await seed(app.state.tenancy)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ok = await client.get("/whoami", headers={"Authorization": f"Bearer {good}"})
            assert ok.status_code == 200
            assert ok.json()["identifier"] == "acme"
            for token in (expired, forged, "not-a-jwt"):
                bad = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
                assert bad.status_code == 401
                assert bad.json() == {"detail": "Unauthorized"}
                assert bad.headers["www-authenticate"] == "Bearer"
            assert (await client.get("/whoami")).status_code == 404


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_refused_startup_leaves_no_pooled_connection(database_url: str) -> None:
    # Row-level security refuses to start as a superuser, after the store has connected.
    tenancy = Tenancy(TenancyConfig(database_url=database_url, row_level_security=True))
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=tenancy)

    with pytest.raises(Exception, match="superuser"):
        async with LifespanManager(app):
            pass

    pool = tenancy.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() == 0
    assert pool.checkedout() == 0

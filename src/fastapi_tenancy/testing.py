"""Helpers for testing an app that uses fastapi-tenancy: run it, create tenants, call it as one.

    from fastapi_tenancy.testing import run_app

    async with run_app(app) as harness:
        await harness.create_tenant("acme")
        async with harness.client("acme") as client:
            response = await client.get("/items")   # resolved to tenant acme
        await harness.reset()                       # no tenants, empty caches

`run_app` drives the app's ASGI lifespan (with ``asgi-lifespan``), so the middleware opens its
runtime exactly as under a server. ``harness.client(identifier)`` is an ``httpx.AsyncClient``
bound to the tenant the way the app's ``resolution_strategy`` reads it: the tenant header, a
subdomain host, a signed JWT, or a path prefix. Install with ``pip install
'fastapi-tenancy-kit[testing]'``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi_tenancy.config import ResolutionStrategy, TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import Tenant, TenantStatus, validate_identifier
from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.types import ASGIApp

try:
    import httpx
    from asgi_lifespan import LifespanManager
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fastapi_tenancy.testing needs httpx and asgi-lifespan; install them with: "
        "pip install 'fastapi-tenancy-kit[testing]'"
    ) from exc

__all__ = [
    "AppHarness",
    "TenantBinding",
    "reset_tenancy",
    "run_app",
    "tenant_binding",
    "tenant_client",
    "tenant_token",
]

# The host test requests go to; any name works with an in-process transport.
TEST_HOST = "test"
TOKEN_LIFETIME_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class TenantBinding:
    """What a request needs to name a tenant: the base URL and headers to send."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)


def tenant_token(
    config: TenancyConfig,
    identifier: str,
    *,
    signing_key: str | None = None,
    claims: Mapping[str, Any] | None = None,
    expires_in: float = TOKEN_LIFETIME_SECONDS,
) -> str:
    """A JWT the app accepts for tenant ``identifier``.

    It carries ``jwt_tenant_claim`` and, when configured, ``jwt_audience`` and ``jwt_issuer``,
    and expires after ``expires_in`` seconds. HMAC algorithms sign with ``jwt_secret``; for
    RS*/PS*/ES*/EdDSA pass the PEM private key as ``signing_key`` (the config holds only the
    public key). ``claims`` adds or overrides claims, e.g. ``{"sub": "user-1"}``.
    """
    import jwt

    key = signing_key
    if key is None:
        if config.jwt_algorithm.startswith("HS") and config.jwt_secret is not None:
            key = config.jwt_secret.get_secret_value()
        else:
            raise ConfigurationError(
                f"signing a {config.jwt_algorithm} token needs the private key: pass signing_key="
            )
    payload: dict[str, Any] = {
        config.jwt_tenant_claim: validate_identifier(identifier),
        "exp": int(time.time() + expires_in),
    }
    if config.jwt_audience is not None:
        payload["aud"] = config.jwt_audience
    if config.jwt_issuer is not None:
        payload["iss"] = config.jwt_issuer
    payload.update(claims or {})
    return jwt.encode(payload, key, algorithm=config.jwt_algorithm)


def tenant_binding(
    config: TenancyConfig,
    identifier: str,
    *,
    via: ResolutionStrategy | None = None,
    signing_key: str | None = None,
) -> TenantBinding:
    """How to address tenant ``identifier`` under ``config``'s resolution strategy.

    ``via`` picks one strategy of a chain (``"header,jwt"``); by default the first is used.
    """
    validate_identifier(identifier)
    strategy = via if via is not None else config.resolution_strategy[0]
    if strategy not in config.resolution_strategy:
        raise ConfigurationError(
            f"the app does not resolve tenants by {strategy!r} "
            f"(resolution_strategy is {','.join(config.resolution_strategy)})"
        )
    match strategy:
        case "header":
            return TenantBinding(f"http://{TEST_HOST}", {config.tenant_header_name: identifier})
        case "subdomain":
            return TenantBinding(f"http://{identifier}.{config.domain_suffix}")
        case "path":
            return TenantBinding(f"http://{TEST_HOST}{config.tenant_path_prefix}/{identifier}")
        case "jwt":
            token = tenant_token(config, identifier, signing_key=signing_key)
            return TenantBinding(f"http://{TEST_HOST}", {"Authorization": f"Bearer {token}"})


def tenant_client(
    app: ASGIApp,
    config: TenancyConfig,
    identifier: str | None = None,
    *,
    via: ResolutionStrategy | None = None,
    signing_key: str | None = None,
    **client_options: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` calling ``app`` in process, as tenant ``identifier``.

    With ``identifier=None`` the client names no tenant (for excluded paths and 404 checks).
    ``client_options`` go to ``httpx.AsyncClient``; headers given there are sent as well.
    """
    binding = (
        TenantBinding(f"http://{TEST_HOST}")
        if identifier is None
        else tenant_binding(config, identifier, via=via, signing_key=signing_key)
    )
    headers = {**binding.headers, **dict(client_options.pop("headers", None) or {})}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=binding.base_url,
        headers=headers,
        **client_options,
    )


async def reset_tenancy(tenancy: Tenancy) -> None:
    """Remove every tenant with its data, and empty the tenant cache.

    Tenants that may be deleted go through the lifecycle (delete, then purge), so their storage is
    dropped the way production drops it; pending, provisioning and failed tenants, which the
    lifecycle cannot delete, have their storage and record removed directly.
    """
    await tenancy.start()
    for tenant in await tenancy.list_tenants(include_deleted=True):
        if tenant.status in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            await tenancy.delete_tenant(tenant.identifier)
            if await tenancy.get_tenant(tenant.identifier) is not None:
                await tenancy.purge_tenant(tenant.identifier)
        elif tenant.status is TenantStatus.DELETED:
            await tenancy.purge_tenant(tenant.identifier)
        else:
            await tenancy.isolation.purge(tenant)
            await tenancy.store.delete(tenant.id)
            await tenancy.lookup.invalidate(tenant.identifier)
    if tenancy.cache is not None:
        await tenancy.cache.clear()


class AppHarness:
    """An app whose lifespan is running, with its tenancy runtime at hand (see `run_app`)."""

    def __init__(self, app: ASGIApp, tenancy: Tenancy) -> None:
        self.app = app
        self.tenancy = tenancy

    @property
    def config(self) -> TenancyConfig:
        return self.tenancy.config

    async def create_tenant(
        self, identifier: str, *, name: str | None = None, **options: Any
    ) -> Tenant:
        """Create an active tenant (`Tenancy.create_tenant`'s keyword arguments apply)."""
        return await self.tenancy.create_tenant(identifier, name=name, **options)

    def client(
        self,
        identifier: str | None = None,
        *,
        via: ResolutionStrategy | None = None,
        signing_key: str | None = None,
        **client_options: Any,
    ) -> httpx.AsyncClient:
        """A client calling the app as tenant ``identifier`` (see `tenant_client`)."""
        return tenant_client(
            self.app,
            self.config,
            identifier,
            via=via,
            signing_key=signing_key,
            **client_options,
        )

    async def reset(self) -> None:
        """Remove every tenant and empty the caches (see `reset_tenancy`)."""
        await reset_tenancy(self.tenancy)


@asynccontextmanager
async def run_app(
    app: ASGIApp,
    *,
    startup_timeout: float | None = 30,
    shutdown_timeout: float | None = 30,
) -> AsyncIterator[AppHarness]:
    """Run ``app``'s lifespan for the block and yield an `AppHarness` for it.

    The app (a FastAPI or Starlette app) must carry `TenancyMiddleware`; its runtime is read from
    ``app.state.tenancy`` once startup finished. Shutdown closes the runtime and its connections.
    """
    async with LifespanManager(
        app, startup_timeout=startup_timeout, shutdown_timeout=shutdown_timeout
    ) as manager:
        state = getattr(app, "state", None)
        tenancy = getattr(state, "tenancy", None)
        if not isinstance(tenancy, Tenancy):
            raise ConfigurationError(
                "the app has no tenancy runtime after startup: add TenancyMiddleware to it "
                "(app.add_middleware(TenancyMiddleware, config=...))"
            )
        yield AppHarness(manager.app, tenancy)

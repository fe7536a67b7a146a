"""`TenancyMiddleware`: the whole integration, as raw ASGI.

Each request reads top to bottom: lifespan or excluded path -> admit (①-③, `Admission`) -> bind
the tenant (④) -> serve the app. Raw ASGI rather than ``BaseHTTPMiddleware``: the tenant
ContextVar set here must reach the endpoint, its dependencies and its background tasks, and
``BaseHTTPMiddleware`` runs the app in another task, where changes to the context are lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.responses import JSONResponse

from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.context import bind_tenant, reset_tenant
from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable, TenancyError
from fastapi_tenancy.exclusions import PathExclusions
from fastapi_tenancy.isolation.unavailable import describe, is_unavailable
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.observe.events import RequestCompleted
from fastapi_tenancy.observe.observer import TenancyObserver
from fastapi_tenancy.principal import PrincipalCheck
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.resolution.path import route_path
from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.types import SCOPE_KEY, ASGIApp, Message, Receive, Scope, Send

__all__ = ["SCOPE_KEY", "TenancyMiddleware"]

logger = logging.getLogger("fastapi_tenancy")

# Messages after which the client has its answer and a 503 can no longer be sent.
_ANSWERED = frozenset({"http.response.start", "websocket.close", "websocket.http.response.start"})


class TenancyMiddleware:
    """Ties every HTTP and WebSocket request to one active tenant.

    ``app.add_middleware(TenancyMiddleware, config=TenancyConfig())`` is all the wiring: the
    runtime opens on lifespan startup (or on the first request when the server runs no lifespan),
    closes on shutdown, and is available as ``app.state.tenancy``. Pass ``tenancy=`` instead of
    ``config=`` to share a runtime you manage; the middleware then closes it only if it opened it.
    ``principal_check=`` confirms that the caller belongs to the tenant
    (`fastapi_tenancy.principal`). ``engine=`` hands over the app's own `AsyncEngine` (or
    `async_sessionmaker`) so the library shares its pool (see `Tenancy`).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: TenancyConfig | None = None,
        *,
        tenancy: Tenancy | None = None,
        principal_check: PrincipalCheck | None = None,
        engine: AsyncEngine | async_sessionmaker[Any] | None = None,
    ) -> None:
        self.app = app
        # Starlette builds its middleware inside the first ASGI call, lifespan included, and a
        # server reads an exception raised there as "lifespan unsupported" and serves 500s. So a
        # setting that cannot work is kept here and refuses the lifespan startup instead.
        self._refusal: ConfigurationError | None = None
        try:
            self.tenancy = _runtime(config, tenancy, principal_check, engine)
        except ConfigurationError as exc:
            self._refusal = exc
            return
        self._excluded = PathExclusions(self.tenancy.settings.excluded_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._refusal is not None:
            await _refuse(self._refusal, scope, receive, send)
            return
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        tenancy = self.tenancy
        if self._is_excluded(scope):
            await self.app({**scope, SCOPE_KEY: tenancy}, receive, send)
            return
        try:
            if not tenancy.started:
                # No lifespan ran (some test clients and servers skip it): open on first use.
                await tenancy.start()
            tenant, resolution, headers = await tenancy.admission.admit(scope)
        except TenancyError as exc:
            await _reject(scope, send, exc)
            return
        if headers:
            send = _with_headers(send, headers)
        child = {**scope, SCOPE_KEY: tenancy, "state": {**scope.get("state", {}), "tenant": tenant}}
        if resolution.mount:
            child["root_path"] = scope.get("root_path", "") + resolution.mount
        observer = tenancy.observer
        token = bind_tenant(tenant)
        try:
            if kind == "http" and observer.wants(RequestCompleted):
                await self._serve_observed(child, receive, send, tenant, resolution, observer)
            else:
                await _serve(self.app, child, receive, send, observer)
        finally:
            reset_tenant(token)

    async def _serve_observed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        tenant: Tenant,
        resolution: Resolution,
        observer: TenancyObserver,
    ) -> None:
        """`_serve`, then a `RequestCompleted` event with the status sent and the duration."""
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await _serve(self.app, scope, receive, send_observed, observer)
        finally:
            subject = (resolution.claims or {}).get("sub")
            await observer.emit(
                RequestCompleted(
                    tenant=tenant,
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    subject=subject if isinstance(subject, str) else None,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            )

    async def _start(self, app: Any) -> bool:
        """Open the runtime, refusing an app whose routes or tenants it could not serve."""
        # Imported here: the checks read FastAPI's routing and the dependencies, which import
        # this module.
        from fastapi_tenancy.preflight import (
            excluded_tenant_routes,
            narrow_exclusions,
            storage_mismatch,
        )

        settings = self.tenancy.settings
        problems = excluded_tenant_routes(app, settings.excluded_paths)
        if problems:
            raise ConfigurationError("; ".join(problems))
        for warning in narrow_exclusions(app, settings.excluded_paths):
            logger.warning(warning)
        opened_here = await self.tenancy.start()
        try:
            tenants = await self.tenancy.store.list(include_deleted=True)
            mismatch = storage_mismatch(settings.isolation_strategy, tenants)
            if mismatch is not None:
                raise ConfigurationError(mismatch)
        except BaseException:
            if opened_here:
                await self.tenancy.close()
            raise
        return opened_here

    def _is_excluded(self, scope: Scope) -> bool:
        return self._excluded.matches(route_path(scope))

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        startup = await receive()
        if startup["type"] != "lifespan.startup":
            await self.app(scope, _replay(startup, receive), send)
            return
        try:
            opened_here = await self._start(scope.get("app"))
        except Exception as exc:
            # Report and re-raise, as Starlette's router does: servers read the message, test
            # harnesses such as asgi-lifespan read the exception. The failed start closed what
            # it had opened.
            await send({"type": "lifespan.startup.failed", "message": f"fastapi-tenancy: {exc}"})
            raise
        app = scope.get("app")
        if app is not None and hasattr(app, "state"):
            app.state.tenancy = self.tenancy
        if isinstance(scope.get("state"), dict):
            scope["state"]["tenancy"] = self.tenancy
        closed = not opened_here

        async def close_once() -> None:
            nonlocal closed
            if not closed:
                closed = True
                await self.tenancy.close()

        async def send_wrapper(message: Message) -> None:
            if message["type"] in (
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
                "lifespan.startup.failed",
            ):
                await close_once()
            await send(message)

        try:
            await self.app(scope, _replay(startup, receive), send_wrapper)
        finally:
            await close_once()


def _runtime(
    config: TenancyConfig | None,
    tenancy: Tenancy | None,
    principal_check: PrincipalCheck | None,
    engine: AsyncEngine | async_sessionmaker[Any] | None,
) -> Tenancy:
    if config is not None and tenancy is not None:
        raise ConfigurationError("pass either config= or tenancy= to TenancyMiddleware")
    if tenancy is not None and principal_check is not None:
        raise ConfigurationError("pass principal_check= to the Tenancy you share instead")
    if tenancy is not None and engine is not None:
        raise ConfigurationError("pass engine= to the Tenancy you share instead")
    if tenancy is not None:
        return tenancy
    return Tenancy(config, principal_check=principal_check, engine=engine)


async def _refuse(error: ConfigurationError, scope: Scope, receive: Receive, send: Send) -> None:
    """Fail the lifespan startup with ``error``'s one line; without a lifespan, fail each call."""
    if scope["type"] == "lifespan" and (await receive())["type"] == "lifespan.startup":
        # Reported and raised, as a failed start of the runtime is (see `_lifespan`).
        await send({"type": "lifespan.startup.failed", "message": f"fastapi-tenancy: {error}"})
    raise error


def _with_headers(send: Send, headers: Sequence[tuple[bytes, bytes]]) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return send_with_headers


def _replay(first: Message, receive: Receive) -> Receive:
    pending: list[Message] = [first]

    async def replaying_receive() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replaying_receive


async def _serve(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, observer: TenancyObserver
) -> None:
    """Run the app; tenant storage failing inside it (its session) answers 503, like the lookup.

    Storage that fails once the response is complete (a session whose connection died closes
    after FastAPI has sent the response) has no client left to tell: it is logged and reported
    here, so the server neither logs an application crash nor drops the keep-alive connection.
    """
    answered = finished = False

    async def send_tracked(message: Message) -> None:
        nonlocal answered, finished
        answered = answered or message["type"] in _ANSWERED
        finished = finished or _finishes(message)
        await send(message)

    try:
        await app(scope, receive, send_tracked)
    except Exception as exc:
        if finished and is_unavailable(exc):
            reason = exc if isinstance(exc, ServiceUnavailable) else describe(exc)
            logger.warning("tenant storage failed after the response was sent: %s", reason)
            observer.failed_after_response()
            return
        if answered or not isinstance(exc, ServiceUnavailable):
            raise
        await _reject(scope, send, exc)


def _finishes(message: Message) -> bool:
    """Whether ``message`` completes the response: the client has all of its answer."""
    kind = message["type"]
    if kind in ("http.response.body", "websocket.http.response.body"):
        return not message.get("more_body", False)
    return bool(kind == "websocket.close")


async def _reject(scope: Scope, send: Send, exc: TenancyError) -> None:
    if exc.status_code >= 500:
        logger.warning("answering %d: %s", exc.status_code, exc)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": exc.ws_close_code, "reason": ""})
        return
    response = JSONResponse(
        {"detail": exc.public_detail},
        status_code=exc.status_code,
        headers=dict(exc.response_headers()),
    )
    await response(scope, _no_receive, send)


async def _no_receive() -> Any:  # pragma: no cover - a JSONResponse never reads the request
    raise RuntimeError("the rejection response does not read the request body")

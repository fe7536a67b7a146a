"""The app each soak server process serves (``uvicorn tests.faults.soak.app:create_app --factory``).

Its config comes from the ``TENANCY_*`` variables the driver sets, like a deployed app's. Besides
the routes the traffic uses, it records, per request, what the server saw behind every answer the
soak counts against it, into ``$SOAK_EVENTS/events-<pid>.jsonl`` (one JSON object a line):

* ``raised``: an exception left the app (Starlette answered it with a ``500``, or it was raised
  after the response had started);
* ``response``: a ``5xx`` was sent (whatever sent it);
* ``refused``: the middleware refused the request with a ``429`` or ``5xx`` before the app ran
  (recorded by an observer's ``refused`` call, the one place every refusal passes);
* ``log``: a ``WARNING`` or worse was logged, with its exception if it carried one (the
  middleware passes the exception of each ``5xx`` it answers as a log argument).

Exceptions are kept twice: as the chain of ``Class: message`` (the report groups by the classes)
and as `tests.support.faults.explain` renders them, with where each was raised.

Each line carries the request's ``X-Soak-Request`` id (``null`` for work off the request path, such
as the audit writer), so the driver joins the server's side to the client's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy import Tenancy, TenancyConfig, TenancyMiddleware, get_tenant_session
from fastapi_tenancy.exceptions import TenancyError
from fastapi_tenancy.metrics import metrics_app
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.observe import TenancyObserver
from fastapi_tenancy.types import Message, Receive, Scope, Send
from tests.support.faults import explain
from tests.support.models import Item

REQUEST_HEADER = b"x-soak-request"
RECENT_ROWS = 20
MAX_HOLD_SECONDS = 10.0
# How many causes of an exception a record keeps, outermost first.
CHAIN_DEPTH = 6

request_id: ContextVar[str | None] = ContextVar("soak_request_id", default=None)


def exception_chain(exc: BaseException | None) -> list[str]:
    """``["Class: message", ...]`` for ``exc`` and its causes (explicit or implicit)."""
    chain: list[str] = []
    while exc is not None and len(chain) < CHAIN_DEPTH:
        chain.append(f"{type(exc).__module__}.{type(exc).__qualname__}: {str(exc)[:300]}")
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return chain


class EventLog:
    """Appends one JSON object a line; every line is flushed, so a killed process loses none."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._file = (folder / f"events-{os.getpid()}.jsonl").open("a", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "rid": request_id.get(), "pid": os.getpid(), **fields}
        self._file.write(json.dumps(record) + "\n")


class EventHandler(logging.Handler):
    """Turns ``WARNING`` and worse log records into ``log`` events."""

    def __init__(self, events: EventLog) -> None:
        super().__init__(logging.WARNING)
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # The middleware logs the exception of each 5xx it answers as an argument.
            errors = [arg for arg in record.args or () if isinstance(arg, BaseException)]
            error = record.exc_info[1] if record.exc_info else (errors[0] if errors else None)
            self._events.write(
                "log",
                logger=record.name,
                level=record.levelname,
                message=record.getMessage()[:500],
                exc=exception_chain(error),
                explained=explain(error) if error is not None else None,
            )
        except Exception:
            self.handleError(record)


class Recording:
    """Outermost ASGI layer: tags the request with its id and records 5xx answers and raises."""

    def __init__(self, app: FastAPI, events: EventLog) -> None:
        self.app = app
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = dict(scope.get("headers", [])).get(REQUEST_HEADER)
        token = request_id.set(rid.decode() if rid else None)
        status: int | None = None

        async def send_recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception as exc:
            self._events.write(
                "raised", status=status, exc=exception_chain(exc), explained=explain(exc)
            )
            raise
        else:
            if status is not None and status >= 500:
                self._events.write("response", status=status)
        finally:
            request_id.reset(token)


class RefusalRecorder(TenancyObserver):
    """Records each ``429``/``5xx`` refusal the middleware answers, with its exception."""

    def __init__(self, events: EventLog) -> None:
        self._events = events

    def refused(self, error: TenancyError, tenant: Tenant | None) -> None:
        if error.status_code >= 500 or error.status_code == 429:
            self._events.write("refused", status=error.status_code, exc=exception_chain(error))


def create_app() -> Recording:
    events = EventLog(Path(os.environ["SOAK_EVENTS"]))
    root = logging.getLogger()
    root.addHandler(EventHandler(events))
    root.addHandler(logging.StreamHandler())  # the server log keeps the warnings too
    tenancy = Tenancy(TenancyConfig(), observers=[RefusalRecorder(events)])
    if tenancy.metrics is None:
        raise RuntimeError("the soak app needs TENANCY_ENABLE_METRICS=true")

    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=tenancy)
    app.mount("/soak/metrics", metrics_app(tenancy))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/items")
    async def recent(session: AsyncSession = Depends(get_tenant_session)) -> list[dict[str, str]]:
        query = select(Item).order_by(Item.id.desc()).limit(RECENT_ROWS)
        return [
            {"name": item.name, "tenant_id": item.tenant_id}
            for item in (await session.scalars(query)).all()
        ]

    @app.post("/items/{marker}")
    async def write(
        marker: str, session: AsyncSession = Depends(get_tenant_session)
    ) -> dict[str, str]:
        item = Item(name=marker)
        session.add(item)
        await session.commit()
        return {"name": item.name, "tenant_id": item.tenant_id}

    @app.get("/hold")
    async def hold(
        seconds: float, session: AsyncSession = Depends(get_tenant_session)
    ) -> dict[str, str]:
        # Keeps a connection checked out: enough of these at once exhaust the pool.
        await session.execute(text("SELECT 1"))
        await asyncio.sleep(min(seconds, MAX_HOLD_SECONDS))
        return {"status": "held"}

    @app.get("/soak/stats")
    async def stats() -> dict[str, Any]:
        audit = tenancy.audit
        return {
            "pid": os.getpid(),
            "audit_dropped": audit.dropped if audit is not None else None,
            "audit_failures": audit.failures if audit is not None else None,
        }

    return Recording(app, events)

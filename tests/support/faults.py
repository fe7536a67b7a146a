"""What the fault tests share: the app (with a route that holds its connection), seeded tenants,
the leak check every response goes through, and the record of the exception behind every 5xx."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig, get_tenant_session
from fastapi_tenancy.health import health_router
from fastapi_tenancy.types import ASGIApp, Receive, Scope, Send
from tests.support import apps
from tests.support.models import Item

GENERIC_503 = {"detail": "Service unavailable"}
REPOSITORY = str(Path(__file__).resolve().parents[2]) + "/"


def explain(exc: BaseException) -> str:
    """``exc`` and its causes: type, message and where each was raised (file:line in function)."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        # Where it was raised, and the last frame of the library's own code it went through.
        ours = [frame for frame in frames if frame.filename.startswith(REPOSITORY + "src/")]
        where = "".join(f" at {_location(frame)}" for frame in frames[-1:])
        if ours and ours[-1] is not frames[-1]:
            where += f" via {_location(ours[-1])}"
        # The first line only: SQLAlchemy appends the statement and its parameters.
        message = next(iter(str(current).splitlines()), "")
        parts.append(f"{type(current).__module__}.{type(current).__qualname__}: {message}{where}")
        current = current.__cause__ or current.__context__
    return "\n    caused by ".join(parts)


def _location(frame: traceback.FrameSummary) -> str:
    return f"{frame.filename.removeprefix(REPOSITORY)}:{frame.lineno} in {frame.name}"


@dataclass
class Failures:
    """The exceptions behind 5xx answers: those that escaped the app (500) and logged 503s."""

    escaped: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def report(self, limit: int = 20) -> str:
        """Every escaped exception with its causes, then each distinct 503 and how often it came."""
        lines = [f"{len(self.escaped)} exception(s) escaped the app (500):"]
        lines += [f"  {text}" for text in self.escaped[:limit]]
        causes = Counter(text.splitlines()[0] for text in self.unavailable)
        lines.append(f"{len(self.unavailable)} answer(s) of 503, {len(causes)} distinct cause(s):")
        lines += [f"  {n} x {text}" for text, n in causes.most_common(limit)]
        return "\n".join(lines)


class _UnavailableLog(logging.Handler):
    """Records the exception of each 503 the middleware answers and logs."""

    def __init__(self, failures: Failures) -> None:
        super().__init__(logging.WARNING)
        self.failures = failures

    def emit(self, record: logging.LogRecord) -> None:
        errors = [arg for arg in record.args or () if isinstance(arg, BaseException)]
        if record.getMessage().startswith("answering 5"):
            self.failures.unavailable.append(explain(errors[0]) if errors else record.getMessage())


@contextmanager
def recording_unavailable(failures: Failures) -> Iterator[None]:
    """Record the 503s logged in the block into ``failures`` (once, however deeply nested)."""
    logger = logging.getLogger("fastapi_tenancy")
    if any(isinstance(h, _UnavailableLog) and h.failures is failures for h in logger.handlers):
        yield
        return
    handler = _UnavailableLog(failures)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def recording_escapes(app: ASGIApp, failures: Failures) -> ASGIApp:
    """``app``, recording every exception that escapes it: the server answers those with 500."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            failures.escaped.append(f"{scope.get('path')}: {explain(exc)}")
            raise

    return recorded


@dataclass
class Holder:
    """Lets a test keep the ``/hold`` route inside its session until it says so."""

    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def fault_app(config: TenancyConfig, holder: Holder | None = None) -> FastAPI:
    """The example app of tests/support/apps.py plus ``/hold``, which keeps its connection checked
    out, and the health endpoints."""
    app = apps.create_app(config)
    app.include_router(health_router())
    held = holder or Holder()

    @app.get("/hold")
    async def hold(session: AsyncSession = Depends(get_tenant_session)) -> list[dict[str, Any]]:
        items = (await session.scalars(select(Item).order_by(Item.id))).all()
        held.holding.set()
        await held.release.wait()
        return [{"name": item.name, "tenant_id": item.tenant_id} for item in items]

    return app


@dataclass
class Running:
    """A started app, a client for it, and the tenants it serves (identifier -> tenant id)."""

    app: FastAPI
    client: httpx.AsyncClient
    ids: dict[str, str]
    failures: Failures = field(default_factory=Failures)

    @property
    def tenancy(self) -> Tenancy:
        tenancy: Tenancy = self.app.state.tenancy
        return tenancy

    async def get(self, identifier: str, path: str = "/items") -> httpx.Response:
        """GET ``path`` as ``identifier``; the response has passed the leak check."""
        response = await self.client.get(path, headers={"X-Tenant-ID": identifier})
        assert_no_leak(response, identifier, self.ids)
        return response

    async def post(self, identifier: str, name: str) -> httpx.Response:
        """Write one item (the route writes two and reads them back); leak-checked."""
        response = await self.client.post(
            "/items", params={"name": f"{identifier}:{name}"}, headers={"X-Tenant-ID": identifier}
        )
        assert_no_leak(response, identifier, self.ids)
        return response

    async def statuses(self, identifier: str, count: int = 1) -> list[int]:
        return [(await self.get(identifier)).status_code for _ in range(count)]


@asynccontextmanager
async def running(
    config: TenancyConfig,
    identifiers: Iterable[str],
    *,
    holder: Holder | None = None,
    database_urls: dict[str, str] | None = None,
    failures: Failures | None = None,
) -> AsyncIterator[Running]:
    """Start the fault app, create ``identifiers`` with two rows each, and yield a client.

    ``database_urls`` gives some tenants an explicit database (database isolation). The
    exceptions behind 5xx answers go to ``failures`` (apps that run together share one: the
    503 log does not say which app wrote it).
    """
    app = fault_app(config, holder)
    failures = failures if failures is not None else Failures()
    with recording_unavailable(failures):
        # The app may take the config's whole shutdown_timeout to close (asgi-lifespan's own
        # limit, 5 s, is shorter): on a loaded machine a close after a Redis restart overran it.
        async with LifespanManager(app, shutdown_timeout=config.shutdown_timeout + 5):
            tenancy: Tenancy = app.state.tenancy
            ids = {}
            for identifier in identifiers:
                url = (database_urls or {}).get(identifier)
                ids[identifier] = (await tenancy.create_tenant(identifier, database_url=url)).id
                async with tenancy.session(identifier) as session:
                    session.add_all([Item(name=f"{identifier}:seed-{n}") for n in range(2)])
                    await session.commit()
            transport = httpx.ASGITransport(
                app=recording_escapes(app, failures), raise_app_exceptions=False
            )
            async with httpx.AsyncClient(transport=transport, base_url="http://faults") as client:
                yield Running(app, client, ids, failures)


def foreign_rows(response: httpx.Response, identifier: str, ids: dict[str, str]) -> list[Any]:
    """Rows in ``response`` that are not ``identifier``'s; any other tenant's name in the body."""
    if response.status_code != 200:
        # An error body is generic: it never names a tenant, this one or another.
        others = [other for other in ids if other != identifier]
        return [other for other in others if other in response.text]
    body = response.json()
    rows = body if isinstance(body, list) else []
    return [
        row
        for row in rows
        if row.get("tenant_id") != ids[identifier]
        or not str(row.get("name", "")).startswith(identifier + ":")
    ]


def assert_no_leak(response: httpx.Response, identifier: str, ids: dict[str, str]) -> None:
    leaked = foreign_rows(response, identifier, ids)
    assert leaked == [], f"{identifier} received another tenant's data: {leaked}"


async def admin_execute(url: str, *statements: str, maintenance: bool = True) -> None:
    """Run ``statements`` outside a transaction, in ``url``'s database or the maintenance one."""
    parsed = make_url(url)
    if maintenance and parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(database="postgres")
    engine = create_async_engine(parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()

"""What the fault tests share: the app (with a route that holds its connection), seeded tenants,
and the leak check every response goes through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy import Tenancy, TenancyConfig, get_tenant_session
from tests import apps
from tests.models import Item

GENERIC_503 = {"detail": "Service unavailable"}


@dataclass
class Holder:
    """Lets a test keep the ``/hold`` route inside its session until it says so."""

    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def fault_app(config: TenancyConfig, holder: Holder | None = None) -> FastAPI:
    """The example app of tests/apps.py plus ``/hold``, which keeps its connection checked out."""
    app = apps.create_app(config)
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
) -> AsyncIterator[Running]:
    """Start the fault app, create ``identifiers`` with two rows each, and yield a client.

    ``database_urls`` gives some tenants an explicit database (database isolation).
    """
    app = fault_app(config, holder)
    async with LifespanManager(app):
        tenancy: Tenancy = app.state.tenancy
        ids = {}
        for identifier in identifiers:
            url = (database_urls or {}).get(identifier)
            ids[identifier] = (await tenancy.create_tenant(identifier, database_url=url)).id
            async with tenancy.session(identifier) as session:
                session.add_all([Item(name=f"{identifier}:seed-{n}") for n in range(2)])
                await session.commit()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://faults") as client:
            yield Running(app, client, ids)


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

"""The central promise: tenant A can never read or write tenant B.

Concurrent mixed-tenant HTTP traffic against an example-style app, with commits in the middle of
handlers, on every database. Every response must hold only the caller's rows, and afterwards each
tenant must own exactly the rows it wrote.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from fastapi_tenancy import Tenancy
from tests import apps
from tests.backends import all_isolations, isolation_config
from tests.models import Item

TENANTS = [f"tenant-{n}" for n in range(6)]
REQUESTS = 240
CONCURRENCY = 40

pytestmark = all_isolations


@pytest.fixture
async def app(isolation_case: tuple[str, str]) -> AsyncIterator[FastAPI]:
    app = apps.create_app(isolation_config(isolation_case))
    async with LifespanManager(app):
        for identifier in TENANTS:
            await app.state.tenancy.create_tenant(identifier)
        yield app


async def test_concurrent_mixed_tenant_traffic_never_crosses_tenants(app: FastAPI) -> None:
    tenancy: Tenancy = app.state.tenancy
    ids = {t.identifier: t.id for t in await tenancy.list_tenants()}
    rng = random.Random(20261123)
    plan = [(rng.choice(TENANTS), rng.random() < 0.5, n) for n in range(REQUESTS)]
    gate = asyncio.Semaphore(CONCURRENCY)
    writes: Counter[str] = Counter()
    transport = httpx.ASGITransport(app=app)

    async def call(client: httpx.AsyncClient, identifier: str, write: bool, n: int) -> None:
        headers = {"X-Tenant-ID": identifier}
        async with gate:
            if write:
                response = await client.post(
                    "/items", params={"name": f"{identifier}:{n}"}, headers=headers
                )
                writes[identifier] += 2
            else:
                response = await client.get("/items", headers=headers)
        assert response.status_code == 200, response.text
        for row in response.json():
            assert row["tenant_id"] == ids[identifier], (identifier, row)
            assert row["name"].startswith(identifier + ":"), (identifier, row)

    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
        await asyncio.gather(*(call(client, *step) for step in plan))

    for identifier in TENANTS:
        async with tenancy.session(identifier) as session:
            rows = (await session.scalars(select(Item))).all()
        assert len(rows) == writes[identifier]
        assert {row.tenant_id for row in rows} <= {ids[identifier]}

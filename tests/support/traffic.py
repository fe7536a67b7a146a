"""Concurrent mixed-tenant HTTP traffic, and the checks that no row ever crossed tenants."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from fastapi_tenancy import Tenancy
from tests.support.models import Item


async def mixed_traffic(
    app: FastAPI, ids: dict[str, str], *, requests: int, concurrency: int
) -> tuple[Counter[str], list[BaseException]]:
    """Reads and writes (each write commits twice and reads back, see tests/support/apps.py) for
    random tenants of ``ids`` (identifier -> tenant id). Returns the rows each tenant wrote and
    every failed request; a response holding another tenant's row counts as a failure."""
    rng = random.Random(20261123)
    tenants = sorted(ids)
    plan = [(rng.choice(tenants), rng.random() < 0.5, n) for n in range(requests)]
    gate = asyncio.Semaphore(concurrency)
    writes: Counter[str] = Counter()

    async def call(client: httpx.AsyncClient, identifier: str, write: bool, n: int) -> None:
        headers = {"X-Tenant-ID": identifier}
        async with gate:
            if write:
                response = await client.post(
                    "/items", params={"name": f"{identifier}:{n}"}, headers=headers
                )
            else:
                response = await client.get("/items", headers=headers)
        assert response.status_code == 200, response.text
        if write:
            writes[identifier] += 2
        for row in response.json():
            assert row["tenant_id"] == ids[identifier], (identifier, row)
            assert row["name"].startswith(identifier + ":"), (identifier, row)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
        outcomes = await asyncio.gather(
            *(call(client, *step) for step in plan), return_exceptions=True
        )
    return writes, [outcome for outcome in outcomes if isinstance(outcome, BaseException)]


async def assert_each_tenant_owns_exactly(
    tenancy: Tenancy, ids: dict[str, str], writes: Counter[str]
) -> None:
    """Every tenant holds exactly the rows its own requests wrote, and only its own."""
    for identifier, tenant_id in ids.items():
        async with tenancy.session(identifier) as session:
            rows = (await session.scalars(select(Item))).all()
        assert len(rows) == writes[identifier], identifier
        assert {row.tenant_id for row in rows} <= {tenant_id}

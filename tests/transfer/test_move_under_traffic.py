"""A tenant moved to another database while it and a neighbour keep writing (PostgreSQL).

Counts what the clients saw: every write the moved tenant got a 200 for is in the new database
(0 lost), every row either tenant reads is its own (0 foreign), and the neighbour never gets a 503.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.testing import run_app
from fastapi_tenancy.transfer.move import MOVED_FROM_KEY, move_tenant, url_target
from tests.support import apps
from tests.support.backends import isolation_config
from tests.support.models import Item
from tests.support.polling import eventually
from tests.support.services import TEST_STORAGE_PREFIX

pytestmark = pytest.mark.postgres


@dataclass
class Traffic:
    """What one tenant's client sent and got back."""

    tenant: str
    acknowledged: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: int = 0

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        sent = 0
        while not stop.is_set():
            name = f"{self.tenant}-{sent}"
            sent += 1
            response = await client.post(
                "/items", params={"name": name}, headers={"X-Tenant-ID": self.tenant}
            )
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.acknowledged += [name, f"{name}-again"]  # the route writes both
            elif "Retry-After" in response.headers:
                self.retry_after += 1
            # A refused request may finish without ever waiting (cached lookup, in-process
            # transport): hand the loop to the move and the other client in between.
            await asyncio.sleep(0)


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Tenancy]]:
    app = apps.create_app(isolation_config(("database", database_url)))
    async with run_app(app) as harness:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, harness.tenancy


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_tenant_moves_under_traffic_losing_nothing_and_sparing_its_neighbour(
    database_url: str, served: tuple[httpx.AsyncClient, Tenancy]
) -> None:
    client, tenancy = served
    for identifier in ("acme", "globex"):
        await tenancy.create_tenant(identifier)
    # The destination: a database of its own on a server (here the same one, by URL).
    destination = make_url(database_url).set(database=f"{TEST_STORAGE_PREFIX}moved_acme")
    target = url_target(tenancy, destination.render_as_string(hide_password=False))

    moved, neighbour = Traffic("acme"), Traffic("globex")
    stop = asyncio.Event()
    writers = [asyncio.create_task(t.run(client, stop)) for t in (moved, neighbour)]
    try:
        await eventually(lambda: len(moved.acknowledged) >= 10, what="writes before the move")
        steps: list[str] = []
        result = await move_tenant(tenancy, "acme", target, progress=steps.append)
        assert result.status is TenantStatus.ACTIVE
        assert result.database_url is not None
        after = len(moved.acknowledged)
        await eventually(
            lambda: len(moved.acknowledged) >= after + 10 and neighbour.statuses[200] > 20,
            what="writes after the move",
        )
    finally:
        stop.set()
        await asyncio.gather(*writers)

    assert set(neighbour.statuses) == {200}  # the neighbour never saw a 503
    assert moved.statuses[503] > 0  # the freeze was seen...
    assert moved.retry_after > 0  # ...and said when to come back
    assert set(moved.statuses) <= {200, 503}
    listed: dict[str, list[dict[str, str]]] = {}
    for traffic in (moved, neighbour):
        listed[traffic.tenant] = rows = (
            await client.get("/items", headers={"X-Tenant-ID": traffic.tenant})
        ).json()
        current = await tenancy.get_tenant(traffic.tenant)
        assert current is not None
        assert {row["tenant_id"] for row in rows} == {current.id}  # 0 foreign rows
        assert set(traffic.acknowledged) <= {row["name"] for row in rows}  # 0 lost writes

    # The rows live in the new database; the old one is kept (fenced) until --drop-source.
    engine = create_async_engine(destination, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(select(func.count()).select_from(Item.__table__))
            triggers = await conn.scalar(
                text("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")
            )
    finally:
        await engine.dispose()
    assert stored == len(listed["acme"])
    assert triggers == 0  # the fence stayed behind, on the old copy
    assert result.metadata[MOVED_FROM_KEY]["to"] == target.label

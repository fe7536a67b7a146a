"""A tenant moved to another database while it and a neighbour keep writing (PostgreSQL).

Counts what the clients saw: every write the moved tenant got a 200 for is in the new database
(0 lost), every row either tenant reads is its own (0 foreign), and the neighbour never gets a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.testing import run_app
from fastapi_tenancy.transfer.move import (
    MOVED_FROM_KEY,
    Target,
    move_tenant,
    server_target,
    url_target,
)
from tests.isolation.test_servers import _storage_on, pool_config
from tests.isolation.test_servers import cluster_database as cluster_database
from tests.isolation.test_servers import two_servers as two_servers
from tests.support import apps
from tests.support.backends import isolation_config
from tests.support.polling import eventually
from tests.support.services import TEST_STORAGE_PREFIX

# Each builds databases and keeps two clients writing through a move: load tests, run by CI's slow
# pass (`-m slow`), not the quick default one.
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass
class Traffic:
    """What one tenant's client sent and got back."""

    tenant: str
    acknowledged: list[str] = field(default_factory=list)
    stored: int = 0
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


@asynccontextmanager
async def serving(config: TenancyConfig) -> AsyncIterator[tuple[httpx.AsyncClient, Tenancy]]:
    app = apps.create_app(config)
    async with run_app(app) as harness:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, harness.tenancy


async def move_under_traffic(
    client: httpx.AsyncClient, tenancy: Tenancy, target: Target
) -> tuple[Tenant, Traffic, Traffic, float]:
    """Move ``acme`` to ``target`` while ``acme`` and ``globex`` write; checks what they saw.

    Returns the moved tenant, both clients' traffic and how long the move took.
    """
    moved, neighbour = Traffic("acme"), Traffic("globex")
    stop = asyncio.Event()
    writers = [asyncio.create_task(t.run(client, stop)) for t in (moved, neighbour)]
    try:
        await eventually(lambda: len(moved.acknowledged) >= 10, what="writes before the move")
        started = time.perf_counter()
        result = await move_tenant(tenancy, "acme", target)
        took = time.perf_counter() - started
        assert result.status is TenantStatus.ACTIVE
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
    for traffic in (moved, neighbour):
        rows = (await client.get("/items", headers={"X-Tenant-ID": traffic.tenant})).json()
        current = await tenancy.get_tenant(traffic.tenant)
        assert current is not None
        assert {row["tenant_id"] for row in rows} == {current.id}  # 0 foreign rows
        assert set(traffic.acknowledged) <= {row["name"] for row in rows}  # 0 lost writes
        traffic.stored = len(rows)
    assert result.metadata[MOVED_FROM_KEY]["to"] == target.label
    return result, moved, neighbour, took


async def count_at(url: str, schema: str | None) -> tuple[int, int]:
    """Items and user triggers in the database at ``url`` (in ``schema``, if given)."""
    engine = create_async_engine(url, poolclass=NullPool)
    table = f'"{schema}".items' if schema else "items"
    try:
        async with engine.connect() as conn:
            items = await conn.scalar(text(f"SELECT count(*) FROM {table}"))
            triggers = await conn.scalar(
                text("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal")
            )
    finally:
        await engine.dispose()
    return int(items or 0), int(triggers or 0)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_tenant_moves_to_a_database_by_url_under_traffic(database_url: str) -> None:
    async with serving(isolation_config(("database", database_url))) as (client, tenancy):
        for identifier in ("acme", "globex"):
            await tenancy.create_tenant(identifier)
        # The destination: a database of its own, here on the same server, named by URL.
        destination = make_url(database_url).set(database=f"{TEST_STORAGE_PREFIX}moved_acme")
        target = url_target(tenancy, destination.render_as_string(hide_password=False))
        result, moved, _, _ = await move_under_traffic(client, tenancy, target)
        assert result.database_url is not None
        # The rows live in the new database, without the fence (it stays on the old copy).
        assert await count_at(destination.render_as_string(hide_password=False), None) == (
            moved.stored,
            0,
        )


@pytest.mark.parametrize("strategy", ["schema", "database"])
async def test_a_tenant_moves_to_another_server_under_traffic(
    strategy: str, two_servers: dict[str, str]
) -> None:
    config = pool_config(strategy, two_servers, capacity=5)
    async with serving(config) as (client, tenancy):
        for identifier in ("acme", "globex"):
            await tenancy.create_tenant(identifier, server="pg1")
        target = await server_target(tenancy, "pg2")
        result, moved, _, took = await move_under_traffic(client, tenancy, target)
        assert result.server == "pg2"
        if strategy == "schema":
            where, schema = two_servers["pg2"], result.storage_name
        else:
            url = make_url(two_servers["pg2"]).set(database=result.storage_name)
            where, schema = url.render_as_string(hide_password=False), None
        assert await count_at(where, schema) == (moved.stored, 0)
        # The old copy stays on pg1, fenced, until the same move runs with drop_source.
        assert await _storage_on(two_servers["pg1"], strategy, result.storage_name)
        await move_tenant(tenancy, "acme", target, drop_source=True)
        assert not await _storage_on(two_servers["pg1"], strategy, result.storage_name)
        assert took < 60

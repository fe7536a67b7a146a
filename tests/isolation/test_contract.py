"""The central promise: tenant A can never read or write tenant B.

Concurrent mixed-tenant HTTP traffic against an example-style app, with commits in the middle of
handlers, on every database. Every response must hold only the caller's rows, and afterwards each
tenant must own exactly the rows it wrote.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from fastapi_tenancy import Tenancy
from tests.support import apps
from tests.support.backends import all_isolations, isolation_config
from tests.support.traffic import assert_each_tenant_owns_exactly, mixed_traffic

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
    writes, failures = await mixed_traffic(app, ids, requests=REQUESTS, concurrency=CONCURRENCY)
    assert [repr(failure) for failure in failures] == []
    await assert_each_tenant_owns_exactly(tenancy, ids, writes)

"""One database per backend for a whole test module, its rows emptied before each test.

Creating a database and its tables costs far more than most row-isolation tests; the modules
that only read and write rows share one per backend, and each test starts from empty tables
(plus whatever rows it seeds), so tests still never see each other's writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy import TenancyConfig, Tenant
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.isolation import RowIsolation, TenantTables
from tests.conftest import empty_database


@asynccontextmanager
async def module_engine(
    kind: str, tmp_path_factory: pytest.TempPathFactory, name: str
) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of ``kind``, disposed (and the database reset) at exit."""
    async with empty_database(kind, tmp_path_factory.mktemp(name)) as url:
        engine = central_engine(TenancyConfig(database_url=url))
        try:
            yield engine
        finally:
            await engine.dispose()


async def emptied_row_isolation(
    engine: AsyncEngine, metadata: MetaData, tenant: Tenant
) -> RowIsolation:
    """A new `RowIsolation` over ``metadata`` (tables created once), every row deleted."""
    isolation = RowIsolation(engine, TenantTables(metadata))
    await isolation.provision(tenant)
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())
    return isolation

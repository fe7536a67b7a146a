"""Fixtures the row-isolation test modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy._wiring import central_engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = central_engine(TenancyConfig(database_url=database_url))
    yield engine
    await engine.dispose()

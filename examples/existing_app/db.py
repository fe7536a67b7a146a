"""The app's own database setup: one engine, one session factory, one ``get_db`` dependency.

Nothing here knows about tenants; it is the same before and after the conversion.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

DEFAULT_URL = "sqlite+aiosqlite:///./existing_app.db"
POOL_SIZE = 5


def database_url() -> str:
    """``DATABASE_URL`` from the environment, as the app (and its Alembic env.py) reads it."""
    return os.environ.get("DATABASE_URL", DEFAULT_URL)


def make_engine(url: str | None = None) -> AsyncEngine:
    """The app's one engine; its pool is the only one the app opens, tenants included."""
    return create_async_engine(url or database_url(), pool_size=POOL_SIZE, max_overflow=0)


async def sessions(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """The body of the app's ``get_db`` dependency: a session on its own engine."""
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session

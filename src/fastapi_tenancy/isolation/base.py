"""The isolation contract: how a tenant's data is kept apart from every other tenant's."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy.models import Tenant

__all__ = ["IsolationStrategy"]


class IsolationStrategy(Protocol):
    """Turns a tenant into a session that can only reach that tenant's data."""

    async def start(self) -> None:
        """Open what the strategy needs before the first session."""
        ...

    async def close(self) -> None:
        """Release every connection and engine the strategy opened."""
        ...

    def assign_storage(self, tenant: Tenant) -> Tenant:
        """``tenant`` with the physical storage it will keep for life (its ``storage_name``)."""
        ...

    def session(self, tenant: Tenant) -> AbstractAsyncContextManager[AsyncSession]:
        """A session bound to ``tenant`` for the ``async with`` block; closed on exit."""
        ...

    async def provision(self, tenant: Tenant) -> None:
        """Create the storage and tables ``tenant`` needs; safe to repeat."""
        ...

    async def purge(self, tenant: Tenant) -> None:
        """Destroy every row, table or schema that holds ``tenant``'s data."""
        ...

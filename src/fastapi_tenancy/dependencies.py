"""⑤ FastAPI dependencies: the current tenant and a session bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from fastapi_tenancy.context import current_tenant
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.tenancy import Tenancy
from fastapi_tenancy.types import SCOPE_KEY

__all__ = ["get_current_tenant", "get_tenancy", "get_tenant_session"]


async def get_tenancy(connection: HTTPConnection) -> Tenancy:
    """The runtime installed by `TenancyMiddleware`."""
    tenancy = connection.scope.get(SCOPE_KEY)
    if not isinstance(tenancy, Tenancy):
        raise ConfigurationError(
            "TenancyMiddleware is not installed: app.add_middleware(TenancyMiddleware, ...)"
        )
    return tenancy


async def get_current_tenant() -> Tenant:
    """The tenant of the running request: ``tenant: Tenant = Depends(get_current_tenant)``."""
    return current_tenant()


async def get_tenant_session(connection: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A session that sees only the current tenant's data, closed when the request ends.

    ``session: AsyncSession = Depends(get_tenant_session)``. Commit explicitly; uncommitted work
    is rolled back when the session closes.
    """
    tenancy = await get_tenancy(connection)
    async with tenancy.tenant_session(current_tenant()) as session:
        yield session

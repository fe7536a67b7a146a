"""⑤ The session a tenant's code gets: bound by the strategy, counted, failures as 503.

`tenant_session` is what `get_tenant_session` (a request) and `Tenancy.session` (a script or a
job) both open: the isolation strategy's session for the tenant, counted as in-flight work so a
purge waits for it, with an unreachable database surfacing as `ServiceUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.inflight import InFlight
from fastapi_tenancy.isolation.unavailable import unavailable_as_503
from fastapi_tenancy.models import Tenant

__all__ = ["tenant_session"]


@asynccontextmanager
async def tenant_session(
    isolation: IsolationStrategy, tenant: Tenant, *, inflight: InFlight
) -> AsyncIterator[AsyncSession]:
    """A session bound to ``tenant``, counted in ``inflight`` while it is open.

    A database that cannot be reached (refused, dropped, pool timed out, connection lost)
    surfaces as `ServiceUnavailable`; statement errors pass through unchanged.
    """
    with (
        inflight.track(tenant.id),
        unavailable_as_503(f"the storage of tenant {tenant.identifier!r}"),
    ):
        async with isolation.session(tenant) as session:
            yield session

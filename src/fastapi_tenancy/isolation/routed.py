"""Schema isolation over a pool of database servers: each tenant reaches its own server.

Database isolation needs nothing of this: its engines are per tenant already, and the tenant's
URL names its server (`ServerPool.tenant_database_url`). Schema isolation keeps one engine (and
pool) per server, so `ServerRoutedIsolation` holds one strategy per server and hands each call
to the strategy of the tenant's server; tenants without a server use the central one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from fastapi_tenancy.isolation.base import IsolationStrategy
from fastapi_tenancy.isolation.placement import ServerPool
from fastapi_tenancy.models import Tenant

__all__ = ["ServerRoutedIsolation"]


class ServerRoutedIsolation:
    """One isolation strategy per server; the tenant's ``server`` picks the one that serves it.

    ``engines`` are the servers' engines, which this object owns: `close` disposes them.
    """

    def __init__(
        self,
        default: IsolationStrategy,
        by_server: Mapping[str, IsolationStrategy],
        *,
        pool: ServerPool,
        engines: Sequence[AsyncEngine] = (),
    ) -> None:
        self._default = default
        self._by_server = dict(by_server)
        self._pool = pool
        self._engines = tuple(engines)

    @property
    def pool(self) -> ServerPool:
        return self._pool

    def strategy_for(self, tenant: Tenant) -> IsolationStrategy:
        """The strategy of ``tenant``'s server; `ConfigurationError` for an unknown server."""
        if tenant.server is None:
            return self._default
        strategy = self._by_server.get(tenant.server)
        if strategy is None:
            self._pool.get(tenant.server)  # raises, naming the configured servers
            raise AssertionError(tenant.server)  # pragma: no cover - the pool knows each name
        return strategy

    def strategy_of_server(self, name: str | None) -> IsolationStrategy:
        """The strategy serving the server called ``name`` (``None``: the default server)."""
        if name is None:
            return self._default
        self._pool.get(name)
        return self._by_server[name]

    async def start(self) -> None:
        await self._default.start()
        for strategy in self._by_server.values():
            await strategy.start()

    async def close(self) -> None:
        """Close every server's strategy and dispose the servers' engines."""
        try:
            await self._default.close()
            for strategy in self._by_server.values():
                await strategy.close()
        finally:
            for engine in self._engines:
                await engine.dispose()

    def assign_storage(self, tenant: Tenant) -> Tenant:
        # Storage names are chosen the same way on every server (the same prefix), and unique
        # over all of them: the tenants table holds each name once.
        return self._default.assign_storage(tenant)

    def session(self, tenant: Tenant) -> AbstractAsyncContextManager[AsyncSession]:
        return self.strategy_for(tenant).session(tenant)

    async def provision(self, tenant: Tenant) -> None:
        await self.strategy_for(tenant).provision(tenant)

    async def purge(self, tenant: Tenant) -> None:
        await self.strategy_for(tenant).purge(tenant)

"""A pool of database servers: where new tenants go, and where each tenant's storage is.

``database_servers`` names several servers, each with a capacity (most tenants it takes). A new
tenant is placed when its record is written, and the chosen server's name stays on the record
(``Tenant.server``) for life; tenants without one live on the *default server*: the central
database (schema isolation) or ``database_url_template`` (database isolation), as with no pool.

The placement policy (`ServerPool.choose`): the server asked for by name, if it has room;
otherwise the server with the lowest share of its capacity in use (tenants counted in every
status until they are purged, since their storage exists until then), the first listed on a tie.
A full server is never chosen: when every server is full, creating a tenant fails with
`ServerFull`. Choosing and writing the record happen under one lock in the central database
(`SQLAlchemyTenantStore.add_placed`), so two processes creating tenants at once never place more
tenants on a server than its capacity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy.engine import make_url

from fastapi_tenancy.exceptions import ConfigurationError, TenancyError
from fastapi_tenancy.isolation.naming import checked_storage_name, tenant_database_url
from fastapi_tenancy.models import Tenant

if TYPE_CHECKING:
    from fastapi_tenancy.observe.events import TenantChanged
    from fastapi_tenancy.store.base import TenantStore

logger = logging.getLogger("fastapi_tenancy.placement")

__all__ = [
    "DEFAULT_SERVER",
    "DatabaseServer",
    "PlacingStore",
    "ServerFull",
    "ServerCounts",
    "ServerPool",
    "counts_by_server",
    "place",
    "server_label",
]

# What tenants without a recorded server are shown and counted as; no configured server may take
# this name.
DEFAULT_SERVER = "default"
SERVER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"

Chooser = Callable[[Mapping[str | None, int]], str]


class DatabaseServer(BaseModel):
    """One server of the pool: its name (recorded on its tenants), URL and capacity.

    ``url`` names a database on the server. Schema isolation creates tenant schemas in that
    database; database isolation creates each tenant's database beside it (the URL's database
    replaced by the tenant's), or fills a ``{database}`` placeholder (needed for SQLite paths).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SERVER_NAME_PATTERN)
    url: SecretStr = Field(repr=False)
    capacity: int = Field(ge=1)

    def database_url(self, database: str) -> str:
        """The URL of the database named ``database`` on this server."""
        url = self.url.get_secret_value()
        name = checked_storage_name(database)
        if "{database}" in url:
            return url.format(database=name)
        return make_url(url).set(database=name).render_as_string(hide_password=False)


class ServerFull(TenancyError):
    """No server of the pool (or not the one asked for) has room for another tenant."""


def server_label(tenant: Tenant) -> str:
    """The name of ``tenant``'s server, ``default`` when none is recorded."""
    return tenant.server or DEFAULT_SERVER


class ServerPool:
    """The configured servers, by name; empty when there is only the default server.

    Example::

        pool = ServerPool([DatabaseServer(name="pg1", url="postgresql+asyncpg://…/app",
                                          capacity=500)])
        pool.get("pg1").capacity        # 500
        pool.choose({"pg1": 12}, None)  # "pg1"
    """

    def __init__(self, servers: Iterable[DatabaseServer] = ()) -> None:
        self._servers: dict[str, DatabaseServer] = {}
        for server in servers:
            if server.name == DEFAULT_SERVER or server.name in self._servers:
                raise ConfigurationError(
                    f"database server name {server.name!r} is reserved or listed twice"
                )
            self._servers[server.name] = server
        self.local_lock = asyncio.Lock()

    def __bool__(self) -> bool:
        return bool(self._servers)

    @property
    def servers(self) -> tuple[DatabaseServer, ...]:
        """Every configured server, in the configured order."""
        return tuple(self._servers.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._servers)

    def get(self, name: str) -> DatabaseServer:
        """The server called ``name``; `ConfigurationError` naming the known ones otherwise."""
        server = self._servers.get(name)
        if server is None:
            known = ", ".join(self._servers) or "none (TENANCY_DATABASE_SERVERS is empty)"
            raise ConfigurationError(f"no database server named {name!r}; configured: {known}")
        return server

    def server_of(self, tenant: Tenant) -> DatabaseServer | None:
        """``tenant``'s server, ``None`` for the default server."""
        return None if tenant.server is None else self.get(tenant.server)

    def tenant_database_url(self, tenant: Tenant, template: str | None) -> str:
        """Database isolation: the URL of ``tenant``'s own database on its server.

        An explicit per-tenant ``database_url`` wins; a tenant without a server gets
        ``template`` (`fastapi_tenancy.isolation.naming.tenant_database_url`).
        """
        server = self.server_of(tenant) if tenant.database_url is None else None
        if server is None:
            return tenant_database_url(tenant, template)
        return server.database_url(checked_storage_name(tenant.storage_name))

    def choose(self, counts: Mapping[str | None, int], requested: str | None = None) -> str:
        """The server a new tenant goes to, given the tenants each server has now.

        ``requested`` names a server (which must have room); otherwise the one with the lowest
        share of its capacity in use, the first listed on a tie. Raises `ServerFull`.
        """
        if requested is not None:
            server = self.get(requested)
            used = counts.get(server.name, 0)
            if used >= server.capacity:
                raise ServerFull(
                    f"database server {server.name!r} is full ({used} of {server.capacity} "
                    "tenants); choose another server or raise its capacity"
                )
            return server.name
        best: tuple[float, int] | None = None
        chosen: str | None = None
        for position, server in enumerate(self._servers.values()):
            used = counts.get(server.name, 0)
            if used >= server.capacity:
                continue
            key = (used / server.capacity, position)
            if best is None or key < best:
                best, chosen = key, server.name
        if chosen is None:
            usage = ", ".join(
                f"{s.name} {counts.get(s.name, 0)}/{s.capacity}" for s in self._servers.values()
            )
            raise ServerFull(
                f"every database server is full ({usage}); add a server to "
                "TENANCY_DATABASE_SERVERS or raise a capacity"
            )
        return chosen


@runtime_checkable
class PlacingStore(Protocol):
    """A store that chooses a new tenant's server and writes its record under one lock."""

    async def add_placed(self, tenant: Tenant, choose: Chooser) -> Tenant:
        """Count tenants per server, call ``choose`` with the counts, insert ``tenant`` there."""
        ...


async def place(
    store: TenantStore, tenant: Tenant, pool: ServerPool, requested: str | None = None
) -> Tenant:
    """Write the new ``tenant``'s record, on the server the pool chooses when there is a pool.

    Without configured servers this is ``store.add(tenant)``; asking for a server then is an
    error, since there is none to choose.
    """
    if tenant.database_url is not None:
        if requested is not None:
            raise ConfigurationError(
                "a tenant with its own database URL is on the server that URL names: give "
                "either a server or a database URL"
            )
        return await store.add(tenant)
    if not pool:
        if requested is not None:
            pool.get(requested)  # raises: no servers are configured
        return await store.add(tenant)

    def choose(counts: Mapping[str | None, int]) -> str:
        return pool.choose(counts, requested)

    if isinstance(store, PlacingStore):
        return await store.add_placed(tenant, choose)
    # Stores without `add_placed` (the in-memory store, an app's own) are placed under the
    # pool's own lock: enough for one process, which is all such a store serves.
    async with pool.local_lock:
        counts: dict[str | None, int] = {}
        for other in await store.list(include_deleted=True):
            counts[other.server] = counts.get(other.server, 0) + 1
        return await store.add(tenant.model_copy(update={"server": choose(counts)}))


def counts_by_server(tenants: Iterable[Tenant]) -> dict[str, int]:
    """How many of ``tenants`` each server holds, by `server_label`."""
    counts: dict[str, int] = {}
    for tenant in tenants:
        label = server_label(tenant)
        counts[label] = counts.get(label, 0) + 1
    return counts


class ServerCounts:
    """Tells ``report`` how many tenants each server holds: on `refresh`, and after each create
    or purge (`changed`, subscribed to the runtime's hooks).

    Counted in the central database, so the figure is right whichever process changed it; every
    configured server is reported, those without tenants as 0. A failed count is logged and
    skipped: metrics never fail a start or a lifecycle call.
    """

    def __init__(
        self, store: TenantStore, pool: ServerPool, report: Callable[[Mapping[str, int]], None]
    ) -> None:
        self._store = store
        self._pool = pool
        self._report = report

    async def refresh(self) -> None:
        try:
            count = getattr(self._store, "count_by_server", None)
            if count is not None:
                raw: Mapping[str | None, int] = await count()
                counts = {server or DEFAULT_SERVER: n for server, n in raw.items()}
            else:
                counts = counts_by_server(await self._store.list(include_deleted=True))
        except Exception:
            logger.warning("counting tenants per database server failed", exc_info=True)
            return
        self._report(dict.fromkeys(self._pool.names, 0) | counts)

    async def changed(self, event: TenantChanged) -> None:
        if event.action in ("create", "purge"):
            await self.refresh()

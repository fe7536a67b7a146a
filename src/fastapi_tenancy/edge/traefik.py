"""`TraefikEdge`: the tenant routers in Traefik's Redis KV layout, written and reconciled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi_tenancy.domains import Domain, DomainChanged
from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.observe.events import TenantChanged

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from fastapi_tenancy.config import TenancyConfig
    from fastapi_tenancy.tenancy import Tenancy

__all__ = ["EdgePlan", "EdgeSettings", "TraefikEdge", "desired_keys"]

logger = logging.getLogger("fastapi_tenancy.edge")

# Entry point keys an event clears beyond the configured ones (left by an earlier, longer list).
MAX_ENTRYPOINTS = 16


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """Where and how the routers are written (`from_config`: from the ``edge_*`` settings)."""

    service: str = "tenancy-app"
    root_key: str = "traefik"
    router_prefix: str = "tenant-"
    domain_suffix: str | None = None
    service_urls: tuple[str, ...] = ()
    entrypoints: tuple[str, ...] = ()
    cert_resolver: str | None = None

    @classmethod
    def from_config(cls, config: TenancyConfig) -> EdgeSettings:
        from fastapi_tenancy import _wiring

        return _wiring.edge_settings(config)

    def router_name(self, identifier: str) -> str:
        return f"{self.router_prefix}{identifier}"

    def router_root(self, identifier: str) -> str:
        return f"{self.root_key}/http/routers/{self.router_name(identifier)}/"

    @property
    def owned_patterns(self) -> list[str]:
        """SCAN patterns of every key this module may write or remove."""
        patterns = [f"{self.root_key}/http/routers/{self.router_prefix}*"]
        if self.service_urls:
            patterns.append(f"{self.root_key}/http/services/{self.service}/*")
        return patterns


def router_keys(settings: EdgeSettings, tenant: Tenant, hosts: Iterable[str]) -> dict[str, str]:
    """The keys of ``tenant``'s router: its subdomain and ``hosts``; none when it has no host."""
    names = []
    if settings.domain_suffix is not None:
        names.append(f"{tenant.identifier}.{settings.domain_suffix}")
    names += sorted(set(hosts))
    if not names:
        return {}
    root = settings.router_root(tenant.identifier)
    # Host names are validated (identifiers, normalised domains): no backtick can end the string.
    keys = {
        root + "rule": " || ".join(f"Host(`{name}`)" for name in names),
        root + "service": settings.service,
    }
    for index, entrypoint in enumerate(settings.entrypoints):
        keys[f"{root}entryPoints/{index}"] = entrypoint
    if settings.cert_resolver is not None:
        keys[root + "tls/certResolver"] = settings.cert_resolver
    return keys


def service_keys(settings: EdgeSettings) -> dict[str, str]:
    """The service's load-balancer servers, when this module defines the service."""
    root = f"{settings.root_key}/http/services/{settings.service}/loadBalancer/servers/"
    return {f"{root}{index}/url": url for index, url in enumerate(settings.service_urls)}


def desired_keys(
    settings: EdgeSettings, tenants: Iterable[Tenant], domains: Iterable[Domain]
) -> dict[str, str]:
    """Every key the edge should hold: a router per active tenant, and the service if owned."""
    hosts: dict[str, list[str]] = {}
    for domain in domains:
        hosts.setdefault(domain.tenant_id, []).append(domain.host)
    keys = service_keys(settings)
    for tenant in tenants:
        if tenant.status is TenantStatus.ACTIVE:
            keys.update(router_keys(settings, tenant, hosts.get(tenant.id, ())))
    return keys


@dataclass(frozen=True, slots=True)
class EdgePlan:
    """What a reconcile writes (``write``: key -> value) and removes (``remove``)."""

    write: Mapping[str, str] = field(default_factory=dict)
    remove: Sequence[str] = ()
    desired: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.write and not self.remove

    def lines(self) -> list[str]:
        """The plan as text, one key per line: ``set KEY VALUE`` and ``del KEY``."""
        return [f"set {key} {value}" for key, value in sorted(self.write.items())] + [
            f"del {key}" for key in sorted(self.remove)
        ]


class TraefikEdge:
    """Keeps the tenant routers in Traefik's Redis KV provider in step with the tenants.

    Example::

        edge = TraefikEdge.from_config(config)
        edge.attach(tenancy)                 # follow lifecycle and domain events
        plan = await edge.sync(tenancy)      # reconcile every route
        await edge.close()

    `Tenancy` does all of this itself when ``edge_enabled`` is set.
    """

    def __init__(self, client: Redis | RedisCluster, settings: EdgeSettings) -> None:
        from fastapi_tenancy._redis import is_cluster

        self.client = client
        # A cluster spreads the keys over slots: no MULTI across them, each key on its own.
        self._atomic = not is_cluster(client)
        self.settings = settings
        self._tenancy: Tenancy | None = None
        self._unsubscribe: list[Any] = []
        # One change at a time per process: a router is read, then rewritten.
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: TenancyConfig) -> TraefikEdge:
        from fastapi_tenancy import _wiring

        return _wiring.traefik_edge(config)

    # Events.

    def attach(self, tenancy: Tenancy) -> None:
        """Follow ``tenancy``'s lifecycle and domain events from now on."""
        self._tenancy = tenancy
        self._unsubscribe = [
            tenancy.hooks.subscribe(TenantChanged, self._on_tenant),
            tenancy.hooks.subscribe(DomainChanged, self._on_domain),
        ]

    async def _on_tenant(self, event: TenantChanged) -> None:
        await self.refresh(event.tenant.identifier)

    async def _on_domain(self, event: DomainChanged) -> None:
        await self.refresh(event.tenant.identifier)

    async def refresh(self, identifier: str) -> None:
        """Rewrite (or remove) one tenant's router from what the store holds now.

        The store, not the event, decides: of two changes made in other processes, the route
        always ends as the record the last writer reads.
        """
        tenancy = self._require_tenancy()
        tenant = await tenancy.lifecycle.get(identifier)
        hosts: list[str] = []
        if tenant is not None and tenant.status is TenantStatus.ACTIVE:
            hosts = [domain.host for domain in await tenancy.lifecycle.list_domains(tenant)]
        await self.publish(identifier, tenant, hosts)

    async def publish(self, identifier: str, tenant: Tenant | None, hosts: Iterable[str]) -> None:
        """Make ``identifier``'s router match ``tenant`` (``None`` or not active: no router)."""
        wanted: dict[str, str] = {}
        if tenant is not None and tenant.status is TenantStatus.ACTIVE:
            wanted = router_keys(self.settings, tenant, hosts)
        # Every key a router of this module can have, rather than a SCAN per event (which walks
        # the whole keyspace); a reconcile removes anything else left under the router.
        root = self.settings.router_root(identifier)
        possible = [root + "rule", root + "service", root + "tls/certResolver"]
        count = max(len(self.settings.entrypoints), MAX_ENTRYPOINTS)
        possible += [f"{root}entryPoints/{index}" for index in range(count)]
        async with self._lock, _unavailable_as_503():
            await self._apply(wanted, [key for key in possible if key not in wanted])

    # Reconcile.

    async def plan(self, tenancy: Tenancy) -> EdgePlan:
        """What `sync` would change: the desired keys against those under this module's names."""
        tenants = await tenancy.store.list()
        domains = await tenancy.lifecycle.list_domains()
        desired = desired_keys(self.settings, tenants, domains)
        async with _unavailable_as_503():
            existing = await self._scan(self.settings.owned_patterns)
            current = await self._values(list(desired))
        write = {key: value for key, value in desired.items() if current.get(key) != value}
        remove = sorted(key for key in existing if key not in desired)
        return EdgePlan(write=write, remove=remove, desired=desired)

    async def sync(self, tenancy: Tenancy | None = None, *, dry_run: bool = False) -> EdgePlan:
        """Reconcile every route with the store; with ``dry_run`` only report what would change."""
        tenancy = tenancy if tenancy is not None else self._require_tenancy()
        async with self._lock:
            plan = await self.plan(tenancy)
            if not dry_run and not plan.empty:
                async with _unavailable_as_503():
                    await self._apply(dict(plan.write), list(plan.remove))
        return plan

    def detach(self) -> None:
        """Stop following the events of the runtime given to `attach`."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    async def close(self) -> None:
        """Close the connection pool; a later call reconnects (a runtime may start again)."""
        await self.client.aclose()

    # Redis.

    async def _scan(self, patterns: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for pattern in patterns:
            async for key in self.client.scan_iter(match=pattern, count=500):
                found.add(str(key))
        return found

    async def _values(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            values = await pipe.execute()
        return {
            key: str(value) for key, value in zip(keys, values, strict=True) if value is not None
        }

    async def _apply(self, write: Mapping[str, str], remove: Sequence[str]) -> None:
        """Remove and write in one MULTI/EXEC: Traefik reloads once, never on half a router.

        On a cluster the keys of one router may live on several nodes: the commands then go in
        one pipeline, without the transaction.
        """
        if not write and not remove:
            return
        async with self.client.pipeline(transaction=self._atomic) as pipe:
            for key in remove:
                pipe.delete(key)
            for key, value in write.items():
                pipe.set(key, value)
            await pipe.execute()

    def _require_tenancy(self) -> Tenancy:
        if self._tenancy is None:
            raise ConfigurationError("TraefikEdge: call attach(tenancy) first, or pass tenancy")
        return self._tenancy


@asynccontextmanager
async def _unavailable_as_503() -> AsyncIterator[None]:
    """Redis failures as `ServiceUnavailable`, with no URL in the message."""
    from fastapi_tenancy._redis import redis_failures  # redis-py is an optional extra

    try:
        yield
    except redis_failures() as exc:
        raise ServiceUnavailable(f"the edge Redis is unavailable: {type(exc).__name__}") from exc

"""`Tenancy`: the runtime that owns the store, cache, resolver and isolation of one app."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fastapi_tenancy import _wiring
from fastapi_tenancy.admission import Admission
from fastapi_tenancy.cache.base import SharedTenantCache, TenantCache
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.context import tenant_context
from fastapi_tenancy.engines import app_engine
from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable
from fastapi_tenancy.isolation import DatabaseIsolation, IsolationStrategy
from fastapi_tenancy.isolation.inflight import InFlight
from fastapi_tenancy.isolation.placement import ServerCounts, ServerPool
from fastapi_tenancy.isolation.scope import tenant_session
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import Tenant, validate_identifier
from fastapi_tenancy.observe.audit import AuditTrail
from fastapi_tenancy.observe.events import Hooks, TenantChanged
from fastapi_tenancy.observe.observer import TenancyObserver, compose, handler
from fastapi_tenancy.observe.slowquery import SlowQueryLog
from fastapi_tenancy.principal import PrincipalCheck
from fastapi_tenancy.ratelimit import TenantRateLimiter
from fastapi_tenancy.resolution.base import Resolution, TenantResolver
from fastapi_tenancy.resolution.jwks import JWKSKeys
from fastapi_tenancy.store.base import TenantStore
from fastapi_tenancy.types import Scope

if TYPE_CHECKING:
    from fastapi_tenancy.domains import Domain
    from fastapi_tenancy.edge import TraefikEdge
    from fastapi_tenancy.lifecycle import TenantLifecycle
    from fastapi_tenancy.observe.metrics import TenancyMetrics

__all__ = ["Tenancy"]

logger = logging.getLogger("fastapi_tenancy")


class Tenancy:
    """Everything one app needs for tenancy, opened and closed together.

    The middleware creates one from its config; scripts and background jobs use it directly::

        async with Tenancy(TenancyConfig()) as tenancy:
            await tenancy.create_tenant("acme", name="Acme Inc.")
            async with tenancy.session("acme") as session:
                session.add(Item(name="first"))
                await session.commit()

    ``store`` and ``cache`` replace the defaults built from the config (an SQLAlchemy store on
    ``database_url`` and an in-process cache). ``principal_check`` is the app's hook that
    confirms the caller belongs to the tenant (`fastapi_tenancy.principal`). ``observers`` are
    the app's own `fastapi_tenancy.observe.TenancyObserver` objects, told what the runtime does
    alongside its metrics and hooks.

    ``engine`` is the app's own `AsyncEngine` (or an `async_sessionmaker` bound to one): the
    central database. The tenant store, row and schema isolation and the shared tables then use
    its pool instead of opening a second one, and the runtime never disposes it (the app does).
    ``database_url``, when set, must name the same database; unset, it is taken from the engine.
    See docs/getting-started.md#one-pool-the-apps-own-engine.
    """

    def __init__(
        self,
        config: TenancyConfig | None = None,
        *,
        store: TenantStore | None = None,
        cache: TenantCache | None = None,
        principal_check: PrincipalCheck | None = None,
        observers: Iterable[TenancyObserver] = (),
        engine: AsyncEngine | async_sessionmaker[Any] | None = None,
    ) -> None:
        self.config = config if config is not None else TenancyConfig()
        self.metrics: TenancyMetrics | None = _wiring.metrics(self.config)
        # Only an engine the runtime created is disposed by it.
        self.owns_engine = engine is None
        if engine is None:
            self.engine: AsyncEngine = _wiring.central_engine(self.config)
        else:
            self.engine = app_engine(engine)
            self.config = _wiring.central_database(self.config, self.engine)
        # What the runtime reads of the config itself; the components get theirs from _wiring.
        self.settings = _wiring.runtime_settings(self.config)
        self.store: TenantStore = (
            store if store is not None else _wiring.store(self.config, self.engine)
        )
        if cache is None:
            cache = _wiring.cache(self.config, self.metrics)
        self.cache: TenantCache | None = cache
        self.lookup: TenantLookup = _wiring.lookup(self.config, self.store, self.cache)
        if isinstance(cache, SharedTenantCache):
            cache.listeners.append(self.lookup.forget)
        self.jwks: JWKSKeys | None = _wiring.signing_keys(self.config)
        self.resolver: TenantResolver = _wiring.resolver(self.config, self.jwks)
        self.principal_check = principal_check
        self.isolation: IsolationStrategy = _wiring.isolation(self.config, self.engine)
        # The database servers new tenants are placed on (`fastapi_tenancy.isolation.placement`).
        self.servers: ServerPool = _wiring.server_pool(self.config)
        self.slow_queries: SlowQueryLog | None = _wiring.slow_queries(self.config, self.metrics)
        # The user's subscriptions to typed events (and the audit trail's, below).
        self.hooks = Hooks()
        # ⑥ Everything reports to this one observer, which fans out to the metrics, the
        # slow-query log, the hooks and the app's own observers.
        self.observer: TenancyObserver = compose(
            self.metrics, self.slow_queries, self.hooks, *observers
        )
        self.hooks.observer = self.observer
        self.limiter: TenantRateLimiter | None = _wiring.limiter(self.config, self.observer)
        self._watch_engines()
        self._server_counts = self._count_servers()
        self.admission = Admission(
            self.resolver,
            self.lookup,
            principal_check=principal_check,
            limiter=self.limiter,
            signing_keys=self.jwks,
            observer=self.observer,
        )
        self.inflight = InFlight()
        self.audit: AuditTrail | None = _wiring.audit_trail(
            self.config, self.engine, on_drop=handler(self.observer, "audit_dropped")
        )
        if self.audit is not None:
            self.audit.subscribe(self.hooks)
        self._lifecycle: TenantLifecycle | None = None
        self.edge: TraefikEdge | None = _wiring.edge(self.config)
        if self.edge is not None:
            self.edge.attach(self)
        self.readiness = _wiring.readiness(self.config, self)
        self._lock = asyncio.Lock()
        self._started = False

    def _count_servers(self) -> ServerCounts | None:
        """Report tenants per server (metrics) at start and after each create or purge."""
        report = handler(self.observer, "servers_counted")
        if not self.servers or report is None:
            return None
        counts = ServerCounts(self.store, self.servers, report)
        self.hooks.subscribe(TenantChanged, counts.changed)
        return counts

    def _watch_engines(self) -> None:
        """Report the central engine, and each tenant engine as it is created, to the observer."""
        if handler(self.observer, "engine_created") is None:
            return
        self.observer.engine_created(self.engine, "central")
        if isinstance(self.isolation, DatabaseIsolation):
            self.isolation.engines.observer = self.observer

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> bool:
        """Open the store and isolation; returns ``False`` if they were already open.

        A start that fails (a refused check, an unreachable server) closes what it opened, such
        as pooled connections, before it raises; a later call tries again from the beginning.
        """
        if self._started:
            return False
        async with self._lock:
            if self._started:
                return False
            try:
                if self.jwks is not None:
                    # First: a JWKS that cannot be fetched fails startup before anything opens.
                    await self.jwks.start()
                await self.store.initialize()
                if isinstance(self.cache, SharedTenantCache):
                    await self.cache.start()
                await self.isolation.start()
                if self._server_counts is not None:
                    await self._server_counts.refresh()
                if self.audit is not None:
                    await self.audit.start()
                if self.edge is not None and self.settings.edge_sync_on_start:
                    await self._sync_edge()
            except BaseException:
                await self._close_unlocked()
                raise
            self._started = True
            return True

    async def close(self) -> None:
        """Close everything this runtime opened; the store and isolation first, then the engine.

        The whole close takes at most ``shutdown_timeout`` seconds: a step still waiting then (a
        stalled network, a lease that never ends) is abandoned and logged, and the next one runs
        with what is left. Queued audit records get ``audit_flush_timeout`` of it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except TimeoutError:
            logger.error(
                "shutdown abandoned after %ss: a start or close of this runtime is still running",
                self.settings.shutdown_timeout,
            )
            return
        try:
            await self._close_unlocked(deadline)
        finally:
            self._lock.release()

    async def _close_unlocked(self, deadline: float | None = None) -> None:
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.settings.shutdown_timeout
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if self.audit is not None:
            steps.append(("the audit trail", self._close_audit))
        if self.limiter is not None:
            steps.append(("the rate limiter", self.limiter.close))
        if self.jwks is not None:
            steps.append(("the JWKS client", self.jwks.close))
        if self.edge is not None:
            steps.append(("the edge publisher", self.edge.close))
        steps += [
            ("the isolation strategy", self.isolation.close),
            ("the tenant store", self.store.close),
        ]
        if self.cache is not None:
            steps.append(("the cache", self.cache.close))
        steps.append(("the readiness check", self.readiness.close))
        if self.owns_engine:
            steps.append(("the central engine", self.engine.dispose))
        failure: Exception | None = None
        try:
            for what, step in steps:
                try:
                    await _within(deadline, what, step)
                except Exception as exc:
                    # Close the rest anyway; the first failure is raised at the end.
                    failure = failure or exc
        finally:
            self._started = False
        if failure is not None:
            raise failure

    async def _sync_edge(self) -> None:
        # A Redis that is down must not keep the app from serving: the routes Traefik already
        # has keep working, and the next start or `fastapi-tenancy edge sync` repairs them.
        assert self.edge is not None
        try:
            plan = await self.edge.sync(self)
        except ServiceUnavailable as exc:
            logger.warning("edge routes not reconciled at start: %s", exc)
            return
        if not plan.empty:
            logger.info(
                "edge routes reconciled: %d keys written, %d removed",
                len(plan.write),
                len(plan.remove),
            )

    async def _close_audit(self) -> None:
        if self.audit is not None:
            await self.audit.close(flush_timeout=self.settings.audit_flush_timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def resolve(self, scope: Scope) -> Resolution | None:
        """Deprecated (removed in the next release): use ``tenancy.admission.resolve(scope)``."""
        warnings.warn(
            "Tenancy.resolve is deprecated and goes away in the next release; use "
            "tenancy.admission.resolve(scope)",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.admission.resolve(scope)

    # Sessions and scopes for code outside a request. By identifier (looked up, refused unless
    # active): `tenant_scope` binds the tenant, `session` also opens its session. By an already
    # found `Tenant` (no lookup): `fastapi_tenancy.tenant_context` binds it, `tenant_session`
    # opens its session.

    @asynccontextmanager
    async def tenant_scope(self, identifier: str) -> AsyncIterator[Tenant]:
        """Bind the active tenant ``identifier`` as the current tenant for the block."""
        await self.start()
        tenant = await self.lookup.get_active(validate_identifier(identifier))
        with tenant_context(tenant):
            yield tenant

    @asynccontextmanager
    async def session(self, identifier: str) -> AsyncIterator[AsyncSession]:
        """A session bound to the active tenant ``identifier``, with that tenant as current."""
        async with self.tenant_scope(identifier) as tenant, self.tenant_session(tenant) as s:
            yield s

    def tenant_session(self, tenant: Tenant) -> AbstractAsyncContextManager[AsyncSession]:
        """A session bound to ``tenant`` (`fastapi_tenancy.isolation.scope.tenant_session`).

        Counted as in-flight work so a purge waits for it; an unreachable database surfaces as
        `ServiceUnavailable`. It does not bind the current tenant: `session` does both.
        """
        return tenant_session(self.isolation, tenant, inflight=self.inflight)

    # Lifecycle, delegated to a module the request path never imports.

    @property
    def lifecycle(self) -> TenantLifecycle:
        if self._lifecycle is None:
            from fastapi_tenancy.lifecycle import TenantLifecycle

            self._lifecycle = TenantLifecycle(
                self.store,
                self.isolation,
                self.lookup,
                hooks=self.hooks,
                inflight=self.inflight,
                soft_delete=self.settings.soft_delete,
                drain_timeout=self.settings.drain_timeout,
                servers=self.servers,
            )
        return self._lifecycle

    async def create_tenant(
        self,
        identifier: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        database_url: str | None = None,
        provision: bool = True,
        server: str | None = None,
    ) -> Tenant:
        """Create an active tenant with its storage; raises `TenantAlreadyExists` if taken.

        ``database_url`` (database isolation only) points the tenant at an existing database
        instead of creating one from ``database_url_template``; it is stored, never logged.
        ``provision=False`` records the tenant as ``pending`` and leaves its storage to a
        `ProvisioningWorker` (``fastapi_tenancy.worker``). A tenant that would get no tables
        (``tenant_metadata`` empty or not importable, ``tenant_tables`` not ``migrations``) is
        refused with `ConfigurationError` before anything is written. With ``database_servers``
        the tenant is placed on the server with the most room, or on ``server`` (by name);
        `ServerFull` when there is none (`fastapi_tenancy.isolation.placement`).
        """
        if provision:
            from fastapi_tenancy.preflight import missing_tables_for

            problem = missing_tables_for(self.settings.tenant_metadata, self.settings.tenant_tables)
            if problem is not None:
                raise ConfigurationError(f"cannot create tenant {identifier!r}: {problem}")
        await self.start()
        return await self.lifecycle.create(
            identifier,
            name=name,
            metadata=metadata,
            database_url=database_url,
            provision=provision,
            server=server,
        )

    async def get_tenant(self, identifier: str) -> Tenant | None:
        """The tenant record in any status, or ``None``."""
        await self.start()
        return await self.lifecycle.get(identifier)

    async def list_tenants(self, *, include_deleted: bool = False) -> list[Tenant]:
        """Every tenant ordered by identifier; soft-deleted ones only with ``include_deleted``."""
        await self.start()
        return await self.store.list(include_deleted=include_deleted)

    async def update_tenant(
        self,
        identifier: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Tenant:
        """Rename the tenant and/or replace its metadata (plans, rate-limit overrides, ...).

        Every process stops serving the old record at once, as after a status change.
        """
        await self.start()
        return await self.lifecycle.update(identifier, name=name, metadata=metadata)

    async def retry_tenant(
        self, identifier: str, *, provision: bool = True, stale_after: float = 600.0
    ) -> Tenant:
        """Provision a ``failed`` tenant again (``provision=False``: leave it to a worker).

        Also a tenant left ``provisioning`` for ``stale_after`` seconds by a process that died.
        """
        await self.start()
        return await self.lifecycle.retry(identifier, provision=provision, stale_after=stale_after)

    async def suspend_tenant(self, identifier: str) -> Tenant:
        """Stop serving the tenant (403) without touching its data."""
        await self.start()
        return await self.lifecycle.transition(identifier, "suspend")

    async def activate_tenant(self, identifier: str) -> Tenant:
        """Serve a suspended tenant again."""
        await self.start()
        return await self.lifecycle.transition(identifier, "activate")

    async def delete_tenant(self, identifier: str) -> Tenant:
        """Soft delete (404 from now on, data kept), or purge when soft delete is disabled."""
        await self.start()
        return await self.lifecycle.delete(identifier)

    async def restore_tenant(self, identifier: str) -> Tenant:
        """Bring a soft-deleted tenant back, with its data."""
        await self.start()
        return await self.lifecycle.transition(identifier, "restore")

    async def purge_tenant(self, identifier: str) -> None:
        """Destroy a deleted tenant's data and record; the only destructive operation."""
        await self.start()
        await self.lifecycle.purge(identifier)

    # Custom domains: host names besides <identifier>.<domain_suffix> (fastapi_tenancy.domains).

    async def add_domain(self, identifier: str, host: str) -> Domain:
        """Serve the tenant ``identifier`` at ``host`` too (``acme.com``), in every process.

        ``host`` is normalised (lower case, IDNA, no port or trailing dot); raises `InvalidDomain`
        for a name that is no host name or lies under ``domain_suffix``, and
        `DomainAlreadyExists` when a tenant already owns it. Emits `DomainChanged`.
        """
        from fastapi_tenancy.domains import InvalidDomain, normalise_domain

        normalised = normalise_domain(host)
        suffix = self.settings.domain_suffix
        if suffix is not None and (normalised == suffix or normalised.endswith("." + suffix)):
            raise InvalidDomain(
                f"{host!r} lies under domain_suffix {suffix!r}: "
                f"<identifier>.{suffix} already names every tenant there"
            )
        await self.start()
        return await self.lifecycle.add_domain(validate_identifier(identifier), normalised)

    async def remove_domain(self, host: str, *, identifier: str | None = None) -> Domain:
        """Stop serving ``host`` (owned by ``identifier``, when given) in every process."""
        from fastapi_tenancy.domains import normalise_domain

        normalised = normalise_domain(host)
        await self.start()
        owner = None if identifier is None else validate_identifier(identifier)
        return await self.lifecycle.remove_domain(normalised, identifier=owner)

    async def list_domains(self, identifier: str | None = None) -> list[Domain]:
        """Every custom domain, or the tenant ``identifier``'s, ordered by host."""
        await self.start()
        tenant = None if identifier is None else await self.lifecycle.require(identifier)
        return await self.lifecycle.list_domains(tenant)


async def _within(deadline: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
    """Run one shutdown step until ``deadline``; past it, abandon the step and log it."""
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline:
        logger.error("shutdown: closing %s skipped, the shutdown deadline has passed", what)
        return
    started = loop.time()
    try:
        async with asyncio.timeout_at(deadline):
            await step()
    except TimeoutError:
        if loop.time() < deadline:
            raise  # the step's own timeout, not the deadline
        logger.error(
            "shutdown: closing %s abandoned after %.1fs at the shutdown deadline (a stalled "
            "network or work that never ends); its connections are left to the process exit",
            what,
            loop.time() - started,
        )

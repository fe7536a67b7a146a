"""`TenancyMetrics`: the Prometheus metrics of one runtime.

Every metric is created here, once, and the label children the request path uses are looked up
up front (``.labels()`` is slow), so recording a request is a dictionary lookup and an ``inc()``.

Registries. In one process each runtime gets its own `CollectorRegistry`, so several runtimes (and
test runs) never collide on prometheus-client's global one. Under a multi-process server
(``PROMETHEUS_MULTIPROC_DIR`` set) values live in files that `MultiProcessCollector` sums at
scrape time; the metric objects are then shared by every runtime of the process, because two
objects writing the same series from one process would overwrite each other's file entries.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import event

from fastapi_tenancy.exceptions import ConfigurationError, TenancyError
from fastapi_tenancy.observe.labels import NO_TENANT, TenantLabels
from fastapi_tenancy.observe.observer import TenancyObserver

if TYPE_CHECKING:
    from prometheus_client.metrics import MetricWrapperBase
    from sqlalchemy.ext.asyncio import AsyncEngine

    from fastapi_tenancy.config import TenancyConfig
    from fastapi_tenancy.models import Tenant
    from fastapi_tenancy.observe.events import Event

__all__ = ["MULTIPROC_ENV", "OUTCOMES", "TenancyMetrics", "outcome_of"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "fastapi_tenancy_"

# What became of a request the middleware handled (excluded paths are not counted).
OUTCOMES = (
    "accepted",  # reached the app with its tenant bound
    "not_found",  # no identifier, malformed, unknown or soft-deleted tenant (404)
    "suspended",  # 403
    "forbidden",  # another 403, e.g. a principal not allowed for the tenant
    "unauthorized",  # bad or missing token (401)
    "rate_limited",  # 429
    "unavailable",  # tenant storage, cache or rate limit storage down (503)
    "error",  # any other tenancy error
)
CACHE_LAYERS = ("memory", "redis")
CACHE_RESULTS = ("hit", "miss", "negative_hit")
POOLS = ("central", "tenant")
# The reasons of fastapi_tenancy.audit.DROP_REASONS, kept here so the metrics import no audit code.
AUDIT_DROP_REASONS = ("queue_full", "rejected", "spill_failed", "corrupt_spill")
# Resolution is an in-process cache hit most of the time: buckets from 50 µs.
RESOLUTION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def outcome_of(exc: TenancyError) -> str:
    """The ``outcome`` label of a request refused with ``exc`` (the error's own ``outcome``)."""
    return exc.outcome


# The per-tenant counters whose children `_tenant_child` keeps, each under its own key.
_RATE_LIMITED = "rate_limited"
_SLOW_QUERIES = "slow_queries"


class _Families:
    """The metric objects and their pre-looked-up children; one per runtime, or per process."""

    def __init__(self, registry: CollectorRegistry | None, labels: TenantLabels | None) -> None:
        # With registry=None the metrics register nowhere: multi-process values are read from
        # their files by MultiProcessCollector, not from a registry.
        self.labels = labels
        tenant = ("tenant",) if labels is not None else ()
        self.requests = Counter(
            PREFIX + "requests",
            "Requests the tenancy middleware handled, by outcome.",
            ("outcome", *tenant),
            registry=registry,
        )
        self.resolution = Histogram(
            PREFIX + "resolution_seconds",
            "Time from middleware entry until the tenant was resolved (cache or store).",
            buckets=RESOLUTION_BUCKETS,
            registry=registry,
        )
        self.rate_limited = Counter(
            PREFIX + "rate_limited_requests",
            "Requests refused with 429 by the per-tenant rate limit.",
            tenant,
            registry=registry,
        )
        self.cache_lookups = Counter(
            PREFIX + "cache_lookups",
            "Tenant cache lookups, by layer and result (hit, miss, negative_hit).",
            ("layer", "result"),
            registry=registry,
        )
        self.cache_errors = Counter(
            PREFIX + "cache_backend_errors",
            "Cache backend failures that fell back to the next layer or the store.",
            ("layer",),
            registry=registry,
        )
        self.cache_up = Gauge(
            PREFIX + "cache_backend_up",
            "1 while the cache layer is usable (in every live worker), 0 otherwise.",
            ("layer",),
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.engines = Gauge(
            PREFIX + "tenant_engines",
            "Per-tenant engines cached by database isolation.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.evictions = Counter(
            PREFIX + "tenant_engine_evictions",
            "Per-tenant engines evicted from the engine cache to make room.",
            registry=registry,
        )
        self.checked_out = Gauge(
            PREFIX + "pool_connections_checked_out",
            "Database connections checked out of the pools (central or tenant engines).",
            ("pool",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        # Set from a count in the central database (at start and after each create or purge in
        # any process), so the most recent value is right whichever process wrote it.
        self.server_tenants = Gauge(
            PREFIX + "server_tenants",
            "Tenants (in every status until purged) on each database server of the pool; "
            "'default' counts those without one.",
            ("server",),
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.slow_queries = Counter(
            PREFIX + "slow_queries",
            "Statements slower than slow_query_threshold_ms.",
            tenant,
            registry=registry,
        )
        self.failures_after_response = Counter(
            PREFIX + "storage_failures_after_response",
            "Tenant storage failures after the response was complete (a session that could not "
            "close cleanly); logged as warnings, the client already had its answer.",
            registry=registry,
        )
        self.rate_limit_storage_failures = Counter(
            PREFIX + "rate_limit_storage_failures",
            "Rate limit storage failures (the request was refused with 503 or let through, as "
            "rate_limit_fail_closed says).",
            registry=registry,
        )
        self.hook_failures = Counter(
            PREFIX + "hook_failures",
            "Hooks (event subscribers) that raised; logged, the change they heard of stands.",
            registry=registry,
        )
        self.audit_dropped = Counter(
            PREFIX + "audit_dropped",
            "Audit records lost, by reason (queue_full, rejected, spill_failed, corrupt_spill).",
            ("reason",),
            registry=registry,
        )
        self.audit_dropped_children = {
            reason: self.audit_dropped.labels(reason) for reason in AUDIT_DROP_REASONS
        }
        self.cache_lookup_children = {
            (layer, result): self.cache_lookups.labels(layer, result)
            for layer in CACHE_LAYERS
            for result in CACHE_RESULTS
        }
        self.cache_error_children = {
            layer: self.cache_errors.labels(layer) for layer in CACHE_LAYERS
        }
        self.cache_up_children = {layer: self.cache_up.labels(layer) for layer in CACHE_LAYERS}
        self.pool_children = {pool: self.checked_out.labels(pool) for pool in POOLS}
        # Children keyed by (outcome, tenant label) are created on first use; TenantLabels keeps
        # their number at len(OUTCOMES) * (limit + 2).
        self.request_children: dict[Any, Any] = {}
        self.tenant_children: dict[tuple[str, str], Any] = {}
        if labels is None:
            self.request_children = {outcome: self.requests.labels(outcome) for outcome in OUTCOMES}


class TenancyMetrics(TenancyObserver):
    """Prometheus metrics for one `Tenancy` runtime; built when ``enable_metrics`` is on.

    It is one of the runtime's observers (`fastapi_tenancy.observe.TenancyObserver`): the
    admission, the caches, the engines, the slow-query log and the audit trail report to it.
    Expose it with
    `fastapi_tenancy.metrics.metrics_app`::

        metrics = TenancyMetrics.from_config(TenancyConfig(enable_metrics=True))
        metrics.request("accepted", tenant)
    """

    # Multi-process mode: one set of metric objects per process and tenant-label setting.
    _process_families: ClassVar[dict[tuple[bool, int], _Families]] = {}
    _process_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, tenant_label: bool = False, tenant_label_limit: int = 20) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir is not None and not os.path.isdir(self.multiprocess_dir):
            raise ConfigurationError(
                f"{MULTIPROC_ENV}={self.multiprocess_dir!r} is not a directory: create it (and "
                "empty it) before the server starts its workers"
            )
        self.registry: CollectorRegistry | None = None
        if self.multiprocess_dir is None:
            self.registry = CollectorRegistry(auto_describe=True)
            labels = TenantLabels(tenant_label_limit) if tenant_label else None
            self._families = _Families(self.registry, labels)
        else:
            key = (tenant_label, tenant_label_limit)
            with self._process_lock:
                families = self._process_families.get(key)
                if families is None:
                    labels = TenantLabels(tenant_label_limit) if tenant_label else None
                    families = self._process_families[key] = _Families(None, labels)
            self._families = families
        self.tenant_label = tenant_label
        self.tenant_label_limit = tenant_label_limit
        families = self._families
        self._resolution_observe = families.resolution.observe
        # The histogram's own method serves as `resolved` (same signature): one Python call
        # less on every request.
        self.resolved = families.resolution.observe  # type: ignore[method-assign,assignment]
        self._cache_lookups = families.cache_lookup_children
        self._cache_errors = families.cache_error_children
        self._cache_up = families.cache_up_children

    @classmethod
    def from_config(cls, config: TenancyConfig) -> TenancyMetrics:
        """The metrics the settings describe, enabled or not (`fastapi_tenancy._wiring`)."""
        from fastapi_tenancy import _wiring

        return _wiring.tenancy_metrics(config)

    @property
    def families(self) -> tuple[MetricWrapperBase, ...]:
        """Every metric object, e.g. to read a value in a test or register them elsewhere."""
        f = self._families
        return (
            f.requests,
            f.resolution,
            f.rate_limited,
            f.cache_lookups,
            f.cache_errors,
            f.cache_up,
            f.engines,
            f.evictions,
            f.checked_out,
            f.server_tenants,
            f.slow_queries,
            f.failures_after_response,
            f.rate_limit_storage_failures,
            f.hook_failures,
            f.audit_dropped,
        )

    def tenant_label_of(self, tenant: Tenant | None) -> str:
        """The bounded ``tenant`` label value (``""`` when no tenant is known)."""
        labels = self._families.labels
        if labels is None or tenant is None:
            return NO_TENANT
        return labels(tenant.identifier)

    # The request path.

    def request(self, outcome: str, tenant: Tenant | None = None) -> None:
        """Count one request the middleware handled, with its ``outcome`` (see `OUTCOMES`)."""
        families = self._families
        if families.labels is None:
            families.request_children[outcome].inc()
            return
        key = (outcome, self.tenant_label_of(tenant))
        child = families.request_children.get(key)
        if child is None:
            child = families.request_children[key] = families.requests.labels(*key)
        child.inc()

    def admitted(self, tenant: Tenant) -> None:
        """Count a request that reached the app with ``tenant`` bound."""
        families = self._families
        if families.labels is None:
            families.request_children["accepted"].inc()
            return
        self.request("accepted", tenant)

    def refused(self, error: TenancyError, tenant: Tenant | None = None) -> None:
        """Count a request the middleware refused with ``error``."""
        outcome = error.outcome
        self.request(outcome, tenant)
        if outcome == "rate_limited":
            self._tenant_child(_RATE_LIMITED, self._families.rate_limited, tenant).inc()

    def resolved(self, seconds: float) -> None:
        """Record the time from middleware entry until the tenant was resolved."""
        self._resolution_observe(seconds)

    def slow_query(self, tenant: Tenant | None, duration_ms: float = 0.0) -> None:
        """Count one statement slower than ``slow_query_threshold_ms``."""
        self._tenant_child(_SLOW_QUERIES, self._families.slow_queries, tenant).inc()

    def failed_after_response(self) -> None:
        """Count a tenant storage failure that came after the response was complete."""
        self._families.failures_after_response.inc()

    def rate_limit_storage_failed(self) -> None:
        """Count a failure of the rate limit storage."""
        self._families.rate_limit_storage_failures.inc()

    def hook_failed(self, failed: Event) -> None:
        """Count a hook that raised on ``failed``."""
        self._families.hook_failures.inc()

    def _tenant_child(self, counter: str, family: Counter, tenant: Tenant | None) -> Any:
        families = self._families
        if families.labels is None:
            return family
        key = (counter, self.tenant_label_of(tenant))
        child = families.tenant_children.get(key)
        if child is None:
            child = families.tenant_children[key] = family.labels(key[1])
        return child

    # The caches.

    def cache_lookup(self, layer: str, result: str) -> None:
        """Count a cache lookup: ``layer`` memory|redis, ``result`` hit|miss|negative_hit."""
        self._cache_lookups[layer, result].inc()

    def cache_backend_error(self, layer: str) -> None:
        """Count a failure of the ``layer`` backend (the lookup fell back)."""
        self._cache_errors[layer].inc()

    def cache_backend_up(self, layer: str, up: bool) -> None:
        """Record whether the ``layer`` backend is usable."""
        self._cache_up[layer].set(1 if up else 0)

    def audit_dropped(self, reason: str, count: int) -> None:
        """Count ``count`` audit records lost for ``reason`` (see `audit.DROP_REASONS`)."""
        self._families.audit_dropped_children[reason].inc(count)

    # The pool of database servers.

    def servers_counted(self, counts: Mapping[str, int]) -> None:
        """Record how many tenants each database server holds (by name, ``default`` included)."""
        for server, count in counts.items():
            self._families.server_tenants.labels(server).set(count)

    # Engines and pools.

    def engine_created(self, engine: AsyncEngine, pool: str = "tenant") -> None:
        """Count ``engine``'s checked-out connections in the ``pool`` gauge."""
        self.watch_pool(engine, pool)

    def engines_cached(self, count: int) -> None:
        """Record how many per-tenant engines the engine cache holds."""
        self._families.engines.set(count)

    def engine_evicted(self) -> None:
        """Count one per-tenant engine evicted from the engine cache."""
        self._families.evictions.inc()

    def watch_pool(self, engine: AsyncEngine, pool: str) -> None:
        """Count ``engine``'s checked-out connections in the ``pool`` gauge (central|tenant).

        Checkout and checkin events keep the gauge, so it also works summed across processes.
        A connection detached from its pool (it never checks in) stops counting when detached.
        """
        gauge = self._families.pool_children[pool]
        checked_out: set[int] = set()

        def on_checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
            checked_out.add(id(record))
            gauge.inc()

        def on_return(_dbapi: Any, record: Any) -> None:
            # Each connection is counted once however many of checkin/detach fire for it.
            if id(record) in checked_out:
                checked_out.discard(id(record))
                gauge.dec()

        # Listeners on the engine follow its pool when dispose() replaces it.
        target = engine.sync_engine
        event.listen(target, "checkout", on_checkout)
        event.listen(target, "checkin", on_return)
        event.listen(target, "detach", on_return)

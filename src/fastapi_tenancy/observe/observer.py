"""⑥ `TenancyObserver`: the one interface through which the library reports what happens.

Every part that has something to report calls a method of one observer: the admission (①-③) each
request's outcome, the middleware a storage failure after the response, the cache its lookups,
the engine cache its engines, the slow-query log its statements, the audit trail its losses, the
rate limiter and the hooks their failures, the lifecycle and the middleware their typed events.
Every method has a no-op default, so an observer overrides only what it cares about; `compose`
fans out to several of them.

What plugs in (each a `TenancyObserver`): ``TenancyMetrics`` (Prometheus), ``SlowQueryLog``
(watches every engine created), ``Hooks`` (user subscriptions to typed events, through which the
audit trail records them).

The narrower protocols `CacheObserver` and `EngineObserver` are the slices the cache and the
engine cache call; a `TenancyObserver` satisfies both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from fastapi_tenancy.exceptions import TenancyError
    from fastapi_tenancy.models import Tenant
    from fastapi_tenancy.observe.events import Event

__all__ = [
    "CacheObserver",
    "CompositeObserver",
    "EngineObserver",
    "TenancyObserver",
    "compose",
    "handler",
]


class CacheObserver(Protocol):
    """The slice of `TenancyObserver` the tenant caches call.

    ``layer`` is ``"memory"`` or ``"redis"``; ``result`` is ``"hit"``, ``"miss"`` or
    ``"negative_hit"`` (a cached "no such tenant").
    """

    def cache_lookup(self, layer: str, result: str) -> None: ...

    def cache_backend_error(self, layer: str) -> None: ...

    def cache_backend_up(self, layer: str, up: bool) -> None: ...


class EngineObserver(Protocol):
    """The slice of `TenancyObserver` the engine cache (`EngineLRU`) calls."""

    def engine_created(self, engine: AsyncEngine) -> None:
        """A new engine, before its first connection: the place to attach event listeners."""
        ...

    def engines_cached(self, count: int) -> None:
        """The number of cached engines changed to ``count``."""
        ...

    def engine_evicted(self) -> None:
        """An engine was evicted to make room for another key."""
        ...


class TenancyObserver:
    """Told about everything the library does worth observing; every method is a no-op here.

    Subclass it and override what you need::

        class Refusals(TenancyObserver):
            def refused(self, error: TenancyError, tenant: Tenant | None) -> None:
                print(error.outcome, tenant)

    The request-path methods (``resolved``, ``admitted``, ``refused``) run on every request:
    keep them cheap. An observer that does not override one costs nothing there: callers look
    up `handler` once and skip the methods left at their default.
    """

    # ①-③ admission, once per request.

    def resolved(self, seconds: float) -> None:
        """The tenant was found ``seconds`` after the request entered the middleware."""

    def admitted(self, tenant: Tenant) -> None:
        """The request passed ①-③ and reaches the app with ``tenant`` bound."""

    def refused(self, error: TenancyError, tenant: Tenant | None) -> None:
        """The request was answered with ``error`` (its ``outcome`` says why) before the app."""

    def rate_limit_storage_failed(self) -> None:
        """The rate limit storage failed (``rate_limit_fail_closed`` chose: 503 or let through)."""

    # ⑤ serving.

    def failed_after_response(self) -> None:
        """Tenant storage failed after the response was complete (logged, not raised)."""

    # ② the tenant caches (`CacheObserver`).

    def cache_lookup(self, layer: str, result: str) -> None:
        """A lookup in ``layer`` (memory|redis) ended with ``result`` (hit|miss|negative_hit)."""

    def cache_backend_error(self, layer: str) -> None:
        """The ``layer`` backend failed; the lookup fell back to the next layer or the store."""

    def cache_backend_up(self, layer: str, up: bool) -> None:
        """The ``layer`` backend became usable (``up``) or unusable."""

    # ⑤ engines and statements (`EngineObserver`).

    def engine_created(self, engine: AsyncEngine, pool: str = "tenant") -> None:
        """A new engine (``pool`` central|tenant), before its first connection."""

    def engines_cached(self, count: int) -> None:
        """Database isolation's engine cache now holds ``count`` engines."""

    def engine_evicted(self) -> None:
        """An engine was evicted from the engine cache to make room."""

    def slow_query(self, tenant: Tenant | None, duration_ms: float) -> None:
        """A statement of ``tenant`` ran longer than ``slow_query_threshold_ms``."""

    def servers_counted(self, counts: Mapping[str, int]) -> None:
        """Tenants per database server of the pool (``default``: none recorded), freshly counted."""

    # ⑥ typed events and the audit trail.

    def wants(self, event_type: type[Event]) -> bool:
        """Whether `emit` would do anything with an ``event_type`` event (to skip building it)."""
        return False

    async def emit(self, event: Event) -> None:
        """A typed event (``TenantChanged``, ``RequestCompleted``) after what it describes."""

    def hook_failed(self, event: Event) -> None:
        """A hook subscribed to ``event``'s type raised (logged; the change it heard of stands)."""

    def audit_dropped(self, reason: str, count: int) -> None:
        """``count`` audit records were lost for ``reason`` (see ``audit.DROP_REASONS``)."""


_METHODS = (
    "resolved",
    "admitted",
    "refused",
    "rate_limit_storage_failed",
    "failed_after_response",
    "cache_lookup",
    "cache_backend_error",
    "cache_backend_up",
    "engine_created",
    "engines_cached",
    "engine_evicted",
    "slow_query",
    "servers_counted",
    "hook_failed",
    "audit_dropped",
)


def handler(observer: object | None, name: str) -> Callable[..., Any] | None:
    """``observer``'s method ``name``, or ``None`` when there is nothing to call.

    ``None`` when ``observer`` is ``None`` or leaves the method at `TenancyObserver`'s no-op
    default, so a caller on the request path can skip the call (and its timing) altogether.
    """
    if observer is None:
        return None
    method = getattr(observer, name, None)
    if method is None or getattr(method, "__func__", None) is getattr(TenancyObserver, name):
        return None
    return method  # type: ignore[no-any-return]


class CompositeObserver(TenancyObserver):
    """Fans every report out to several observers, in order.

    Each method is bound once, when the composite is built: a method only one observer
    implements is that observer's bound method itself, so composing costs nothing per call.
    """

    def __init__(self, observers: Iterable[TenancyObserver]) -> None:
        self.observers = tuple(observers)
        for name in _METHODS:
            targets = [m for m in (handler(o, name) for o in self.observers) if m is not None]
            if len(targets) == 1:
                setattr(self, name, targets[0])
            elif targets:
                setattr(self, name, _fan_out(targets))
        self._wanting = [o for o in self.observers if handler(o, "wants") is not None]
        if len(self._wanting) == 1:
            self.wants = self._wanting[0].wants  # type: ignore[method-assign]

    def wants(self, event_type: type[Event]) -> bool:
        return any(observer.wants(event_type) for observer in self._wanting)

    async def emit(self, event: Event) -> None:
        for observer in self._wanting:
            if observer.wants(type(event)):
                await observer.emit(event)


def _fan_out(targets: list[Callable[..., Any]]) -> Callable[..., None]:
    def fan_out(*args: Any) -> None:
        for target in targets:
            target(*args)

    return fan_out


def compose(*observers: TenancyObserver | None) -> TenancyObserver:
    """One observer reporting to every one of ``observers`` (``None`` entries are skipped)."""
    present = [observer for observer in observers if observer is not None]
    if len(present) == 1:
        return present[0]
    return CompositeObserver(present)

"""⑥ Events: typed facts the library emits, and the hooks that receive them.

    tenancy.hooks.subscribe(TenantChanged, handler)   # handler(event), sync or async

Hooks run after the change they describe is stored. A hook that raises is logged and reported
to the runtime's observer (``hook_failed``; the metrics count it), never propagated: it cannot
undo, block or half-apply a lifecycle change.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.observe.observer import TenancyObserver

__all__ = ["Event", "Hooks", "LifecycleAction", "RequestCompleted", "TenantChanged"]

logger = logging.getLogger("fastapi_tenancy")

LifecycleAction = Literal[
    "create",
    "start_provisioning",
    "provision",
    "retry",
    "fail",
    "suspend",
    "activate",
    "delete",
    "restore",
    "purge",
    "update",
    "start_move",
    "finish_move",
]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: when it happened."""

    at: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantChanged(Event):
    """A lifecycle action took effect: ``tenant`` is the record as stored afterwards.

    ``previous`` is the status before the action (``None`` for ``create``). After ``purge`` the
    record no longer exists; ``tenant`` is its last state.
    """

    action: LifecycleAction
    tenant: Tenant
    previous: TenantStatus | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted(Event):
    """A tenant request finished. ``subject`` is the JWT ``sub`` claim when a token named the
    tenant; ``status`` is the HTTP status sent (500 if the app failed before responding)."""

    tenant: Tenant
    method: str
    path: str
    status: int
    subject: str | None
    duration_ms: float


E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]


class Hooks(TenancyObserver):
    """Subscribers per event type; an event reaches every handler of its class or a base class.

    The runtime's hooks are one of its observers: the lifecycle and the middleware emit their
    events to them, and the audit trail records what it subscribes to here.

    Example::

        async def audit(event: TenantChanged) -> None:
            print(event.action, event.tenant.identifier)

        unsubscribe = tenancy.hooks.subscribe(TenantChanged, audit)
    """

    def __init__(self, observer: TenancyObserver | None = None) -> None:
        self._handlers: list[tuple[type[Event], Callable[[Event], object]]] = []
        # wants() runs on every request: its answers are kept until the subscriptions change.
        self._wanted: dict[type[Event], bool] = {}
        # Told of every hook that raises (`Tenancy` sets its one observer here).
        self.observer = observer
        self._failures = 0

    @property
    def failures(self) -> int:
        """Deprecated (removed in the next release): hooks that raised, counted.

        Failures are reported to the observer (``TenancyObserver.hook_failed``); the metrics
        count them as ``fastapi_tenancy_hook_failures_total``.
        """
        warnings.warn(
            "Hooks.failures is deprecated and goes away in the next release; override "
            "TenancyObserver.hook_failed, or read fastapi_tenancy_hook_failures_total",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._failures

    def subscribe(self, event_type: type[E], handler: Handler[E]) -> Callable[[], None]:
        """Call ``handler`` for every ``event_type`` event; returns a function that unsubscribes."""
        entry = (event_type, handler)
        self._handlers.append(entry)  # type: ignore[arg-type]
        self._wanted.clear()

        def unsubscribe() -> None:
            if entry in self._handlers:
                self._handlers.remove(entry)
                self._wanted.clear()

        return unsubscribe

    def wants(self, event_type: type[Event]) -> bool:
        """Whether any handler would receive an ``event_type`` event (to skip building one)."""
        wanted = self._wanted.get(event_type)
        if wanted is None:
            wanted = any(issubclass(event_type, subscribed) for subscribed, _ in self._handlers)
            self._wanted[event_type] = wanted
        return wanted

    async def emit(self, event: Event) -> None:
        """Deliver ``event`` to its handlers in subscription order; failures are logged only."""
        for event_type, handler in list(self._handlers):
            if not isinstance(event, event_type):
                continue
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self._failures += 1
                logger.warning("hook %r failed on %r", handler, event, exc_info=True)
                if self.observer is not None:
                    self.observer.hook_failed(event)

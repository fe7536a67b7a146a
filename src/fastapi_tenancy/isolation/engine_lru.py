"""A bounded, task-safe cache of per-tenant AsyncEngines with a global connection budget.

Database-per-tenant isolation needs one engine per tenant database, and every engine keeps a pool
of server connections. `EngineLRU` keeps at most ``max_engines`` of them, hands them out as
*leases*, never disposes an engine while a lease holds it, and keeps the number of server
connections that all engines together hold at or below ``connection_budget``.

Connection accounting. A pool's connections are counted from SQLAlchemy's own bookkeeping: for a
`QueuePool`, ``checkedin() + checkedout()`` counts every connection slot, including one being
opened and an overflow connection being closed, and it drops only once ``dispose()`` has closed
the idle connections (asyncpg's close waits until the server has hung up). Pool events keep the
:attr:`EngineLRU.open_connections` figure: ``connect`` adds a connection; ``close`` removes one
(it fires on ``dispose()``, on returning an overflow connection, on hard invalidation right after
``invalidate`` and on recycling a soft-invalidated one); ``close_detached`` removes a connection
that was detached from its pool. ``invalidate`` is not counted, as ``close`` follows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from fastapi_tenancy.engines import redact_url
from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable
from fastapi_tenancy.observe.observer import EngineObserver  # the engine cache's slice of it

__all__ = ["EngineLRU", "EngineObserver"]

logger = logging.getLogger(__name__)


class _Entry:
    """One engine and what the cache knows about it."""

    __slots__ = (
        "connections",
        "detached",
        "detached_connections",
        "engine",
        "key",
        "leases",
        "pins",
        "trim",
    )

    def __init__(self, key: str, engine: AsyncEngine) -> None:
        self.key = key
        self.engine = engine
        # ids of the DBAPI connections this engine has open, from its pool events
        self.connections: set[int] = set()
        # connections detached from the pool: open, but no longer in the pool's bookkeeping
        self.detached_connections: set[int] = set()
        # leases that have passed the budget check and may be using a connection
        self.leases = 0
        # admitted leases plus leases waiting for budget room: a pinned engine is never disposed
        self.pins = 0
        # no longer cached (evicted, discarded or closing): disposed once unpinned
        self.detached = False
        # a running dispose() that closes this engine's idle connections to free budget
        self.trim: asyncio.Task[None] | None = None

    def potential(self) -> int:
        """The most server connections this engine can hold before another lease is admitted."""
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            # A pool opens a connection only when none is idle, so only for a lease whose
            # connection is not yet counted: the pool never outgrows max(slots, leases).
            slots = pool.checkedin() + pool.checkedout()
            return max(slots, self.leases) + len(self.detached_connections)
        return max(len(self.connections), self.leases)

    def could_grow(self) -> bool:
        """Whether one more lease may make this engine open one more connection."""
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            return self.leases + 1 > pool.checkedin() + pool.checkedout()
        return self.leases + 1 > len(self.connections)

    def has_idle_connections_only(self) -> bool:
        """Whether disposing the pool now closes connections and leaves no lease without one."""
        if self.pins or self.trim is not None:
            return False
        pool = self.engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            return pool.checkedout() == 0 and pool.checkedin() > 0
        return bool(self.connections)


class EngineLRU:
    """A bounded LRU of per-tenant `AsyncEngine` objects, leased per session, within a budget.

    ``factory(key)`` builds the engine for ``key`` (give each a small pool, e.g. ``pool_size=2,
    max_overflow=0``). A lease is one session's worth of work: it uses at most one connection at
    a time. The cache is task-safe within one event loop.

    * At most ``max_engines`` engines are cached. Using a key makes it the most recently used; a
      new key evicts the least recently used engine that no lease holds, and disposes it in a
      background task so the request that caused the eviction does not wait for it. When every
      cached engine is leased, the cache grows past ``max_engines`` rather than block, and shrinks
      back as leases end.
    * An engine is never disposed while a lease holds it, even after `discard` or `close`: it is
      disposed when its last lease ends.
    * The server connections of all engines together never exceed ``connection_budget``. Each
      lease holds one of ``connection_budget`` permits; a lease that may need a new connection
      first makes room by closing the idle connections of the least recently used engine that no
      lease holds. A lease that gets no room within ``budget_timeout`` seconds raises
      `ServiceUnavailable` (503).
    * `close` disposes every engine (waiting for active leases to end) and leaves no server
      connection open; a lease after `close` raises `ServiceUnavailable`.

    Example::

        engines = EngineLRU(
            lambda key: create_async_engine(
                f"postgresql+asyncpg://app@db/{key}", pool_size=2, max_overflow=0
            ),
            max_engines=50,
            connection_budget=80,
        )
        async with engines.lease("tenant_acme") as engine:
            async with AsyncSession(engine) as session:
                await session.execute(select(Invoice))
        await engines.discard("tenant_acme")  # e.g. after purging the tenant
        await engines.close()  # at shutdown: no connection left open
    """

    def __init__(
        self,
        factory: Callable[[str], AsyncEngine],
        *,
        max_engines: int,
        connection_budget: int,
        budget_timeout: float = 30.0,
        observer: EngineObserver | None = None,
    ) -> None:
        if max_engines < 1:
            raise ConfigurationError(f"max_engines must be at least 1, not {max_engines}")
        if connection_budget < 1:
            raise ConfigurationError(
                f"connection_budget must be at least 1, not {connection_budget}"
            )
        if budget_timeout <= 0:
            raise ConfigurationError(f"budget_timeout must be positive, not {budget_timeout}")
        self._factory = factory
        self._max_engines = max_engines
        self._budget = connection_budget
        self._budget_timeout = budget_timeout
        self._permits = asyncio.Semaphore(connection_budget)
        # cached engines, least recently used first
        self._cached: OrderedDict[str, _Entry] = OrderedDict()
        # every engine not yet fully disposed: cached, detached but leased, or being disposed
        self._live: set[_Entry] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False
        self._evictions = 0
        self._disposal_errors = 0
        # Set before the first lease; told about every engine created, cached and evicted.
        self.observer = observer

    @property
    def size(self) -> int:
        """How many engines are cached (more than ``max_engines`` only while all are leased)."""
        return len(self._cached)

    @property
    def evictions(self) -> int:
        """How many engines have been evicted to make room for another key."""
        return self._evictions

    @property
    def open_connections(self) -> int:
        """Server connections the engines hold now, counted from their pool events."""
        return sum(len(entry.connections) for entry in self._live)

    @property
    def disposal_errors(self) -> int:
        """How many background disposals failed; each is logged and otherwise ignored."""
        return self._disposal_errors

    @asynccontextmanager
    async def lease(self, key: str) -> AsyncIterator[AsyncEngine]:
        """The engine for ``key``, held for the ``async with`` block.

        Raises `ServiceUnavailable` when the connection budget has no room within
        ``budget_timeout`` seconds, or when the cache is closed.
        """
        entry = await self._admit(key)
        try:
            yield entry.engine
        finally:
            self._release(entry)

    async def discard(self, key: str) -> None:
        """Drop ``key``'s engine, e.g. once its tenant is purged.

        An engine no lease holds is disposed before this returns; a leased one stays usable by
        its leases and is disposed in the background when the last one ends. A later lease of
        ``key`` builds a new engine.
        """
        entry = self._cached.pop(key, None)
        if entry is None:
            return
        self._size_changed()
        entry.detached = True
        if entry.pins == 0:
            await asyncio.shield(self._schedule_disposal(entry))

    async def close(self) -> None:
        """Dispose every engine, once its leases end; afterwards no server connection is open.

        Waits for active leases to end; leases that are waiting for a permit or for budget room
        raise `ServiceUnavailable`, as does every later `lease`. Bound the wait with
        ``asyncio.timeout``: when it is cancelled (a shutdown deadline) the engines still leased
        or being disposed are logged and their disposals cancelled.
        """
        self._closed = True
        while self._cached:
            _, entry = self._cached.popitem(last=False)
            entry.detached = True
            if entry.pins == 0:
                self._schedule_disposal(entry)
        self._size_changed()
        self._wake()
        try:
            while self._tasks or any(entry.pins for entry in self._live):
                if self._tasks:
                    # disposal tasks record their own errors and never raise
                    await asyncio.gather(*self._tasks)
                else:
                    await self._changed(None)
        except asyncio.CancelledError:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Log the engines a close leaves behind and stop their disposals."""
        leased = sorted(entry.key for entry in self._live if entry.pins)
        logger.error(
            "closing the tenant engines abandoned: %d still in use (%s), %d disposals cancelled; "
            "their connections are left to the process exit",
            len(leased),
            ", ".join(leased[:10]) or "none",
            len(self._tasks),
        )
        for task in list(self._tasks):
            task.cancel()

    async def _admit(self, key: str) -> _Entry:
        self._refuse_if_closed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget_timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._permits.acquire()
        except TimeoutError:
            raise self._budget_exhausted(key) from None
        try:
            self._refuse_if_closed()
            entry = self._pin(key)
            try:
                await self._wait_for_room(entry, deadline)
            except BaseException:
                self._unpin(entry)
                raise
        except BaseException:
            self._permits.release()
            raise
        entry.leases += 1
        return entry

    def _pin(self, key: str) -> _Entry:
        # No await between the lookup and the insert: concurrent first leases of a key find the
        # entry the first one created, so each key gets exactly one engine.
        entry = self._cached.get(key)
        if entry is None:
            entry = _Entry(key, self._factory(key))
            self._watch_connections(entry)
            if self.observer is not None:
                self.observer.engine_created(entry.engine)
            self._cached[key] = entry
            self._live.add(entry)
            self._size_changed()
        else:
            self._cached.move_to_end(key)
        entry.pins += 1
        self._evict_over_capacity()
        return entry

    def _unpin(self, entry: _Entry) -> None:
        entry.pins -= 1
        if entry.pins == 0:
            if entry.detached:
                self._schedule_disposal(entry)
            else:
                self._evict_over_capacity()
        self._wake()

    def _release(self, entry: _Entry) -> None:
        entry.leases -= 1
        self._permits.release()
        self._unpin(entry)

    async def _wait_for_room(self, entry: _Entry, deadline: float) -> None:
        """Return once admitting one more lease of ``entry`` keeps the budget."""
        while True:
            self._refuse_if_closed()
            # A lease must not take a connection from a pool that is being disposed: the
            # connection would come back to the discarded pool and stay open there.
            if entry.trim is None:
                if not entry.could_grow():
                    return
                potential = sum(live.potential() for live in self._live)
                if potential + 1 <= self._budget:
                    return
                self._free_idle_connections(entry, potential + 1 - self._budget)
            await self._changed(deadline, entry.key)

    def _free_idle_connections(self, entry: _Entry, excess: int) -> None:
        """Start closing idle connections, least recently used engine first, to free ``excess``."""
        # Disposals already running free their connections for whoever asks next.
        excess -= sum(
            live.potential()
            for live in self._live
            if live.trim is not None or (live.detached and live.pins == 0)
        )
        for candidate in list(self._cached.values()):
            if excess <= 0:
                return
            if candidate is not entry and candidate.has_idle_connections_only():
                excess -= candidate.potential()
                candidate.trim = self._spawn(self._trim(candidate))

    async def _trim(self, entry: _Entry) -> None:
        try:
            # Disposing closes the idle connections and leaves a fresh, empty pool to reuse.
            await self._dispose_engine(entry)
        finally:
            entry.trim = None
            self._wake()

    def _schedule_disposal(self, entry: _Entry) -> asyncio.Task[None]:
        return self._spawn(self._dispose_for_good(entry))

    async def _dispose_for_good(self, entry: _Entry) -> None:
        try:
            if entry.trim is not None:
                await asyncio.shield(entry.trim)
            await self._dispose_engine(entry)
        finally:
            self._live.discard(entry)
            self._wake()

    async def _dispose_engine(self, entry: _Entry) -> None:
        try:
            await entry.engine.dispose()
        except Exception as exc:
            # A failed disposal must not fail the request that triggered it, nor go unnoticed.
            self._disposal_errors += 1
            logger.warning(
                "disposing the engine of %r (%s) failed",
                entry.key,
                redact_url(entry.engine.url),
                exc_info=exc,
            )

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        # The loop keeps only weak references to tasks; `close` awaits the ones kept here.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _evict_over_capacity(self) -> None:
        while len(self._cached) > self._max_engines:
            victim = next((e for e in self._cached.values() if e.pins == 0), None)
            if victim is None:
                # every cached engine is leased: exceed max_engines until leases end
                return
            del self._cached[victim.key]
            victim.detached = True
            self._evictions += 1
            if self.observer is not None:
                self.observer.engine_evicted()
            self._size_changed()
            self._schedule_disposal(victim)

    def _size_changed(self) -> None:
        if self.observer is not None:
            self.observer.engines_cached(len(self._cached))

    def _watch_connections(self, entry: _Entry) -> None:
        connections = entry.connections
        detached = entry.detached_connections

        def opened(dbapi_connection: Any, _record: Any) -> None:
            connections.add(id(dbapi_connection))

        def closed(dbapi_connection: Any, _record: Any) -> None:
            connections.discard(id(dbapi_connection))

        def detached_from_pool(dbapi_connection: Any, _record: Any) -> None:
            detached.add(id(dbapi_connection))

        def closed_detached(dbapi_connection: Any) -> None:
            connections.discard(id(dbapi_connection))
            detached.discard(id(dbapi_connection))

        # Listeners on the engine follow its pool when dispose() replaces it.
        target = entry.engine.sync_engine
        event.listen(target, "connect", opened)
        event.listen(target, "close", closed)
        event.listen(target, "detach", detached_from_pool)
        event.listen(target, "close_detached", closed_detached)

    async def _changed(self, deadline: float | None, key: str = "") -> None:
        """Wait until a lease ends or a disposal finishes; past ``deadline``, raise a 503."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except TimeoutError:
            raise self._budget_exhausted(key) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ServiceUnavailable("the tenant engine cache is closed")

    def _budget_exhausted(self, key: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"no database connection for {key!r} within {self._budget_timeout}s: "
            f"all {self._budget} connections of the budget are in use"
        )

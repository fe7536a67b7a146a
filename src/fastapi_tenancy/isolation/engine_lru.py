"""A bounded, task-safe cache of per-tenant AsyncEngines sharing one connection budget.

Database-per-tenant isolation needs one engine per tenant database. `EngineLRU` keeps at most
``max_engines`` of them, hands them out as *leases* and never disposes an engine while a lease
holds it. The engines' pools are `BudgetPool` objects that share one `ConnectionBudget`: the
server connections of all tenant engines together never exceed ``connection_budget``.

How the budget stays off the request's path. A connection takes a slot of the budget before it
is opened and gives it back once its close has finished, so a connection being opened or being
closed counts too, and the server never sees more than the budget. Idle connections of every
pool are kept in one segmented least-recently-used order: a connection that has served only the
request it was opened for is *probationary*; one that served another request too is
*protected* (up to ``protected_share`` of the budget; the least recently used protected one
beyond that goes back to probation). The least recently used probationary connection is given
up first, a protected one only when no probationary one is idle: a tenant seen once does not
push out the idle connection of a tenant that keeps coming back. A request that needs a new
connection takes a free slot and connects: one connect, nothing more. Slots are kept free ahead
of demand: whenever fewer are free than ``reserve`` or than the connections being opened right
now (but one), whichever is more, plus one for each request waiting, the first idle connection
in that order is closed in a background task, several concurrently when needed. A request finds no
free slot only when misses come faster than closes finish; it then waits in line (first come,
first served) for the next close, never behind closes run one at a time, and gets
`ConnectionBudgetExhausted` (503 with ``Retry-After``) after ``budget_timeout`` seconds. By
default the reserve adapts: each such wait that a larger reserve would have spared (an idle
connection was there to give up, or a close was under way) adds a slot, up to a fifth of the
budget, and each second of connects without a wait takes one back. A connection in use is never
taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, ClassVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, QueuePool
from sqlalchemy.util import await_only, greenlet_spawn

from fastapi_tenancy._secrets import redact_url
from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable
from fastapi_tenancy.observe.observer import EngineObserver  # the engine cache's slice of it

__all__ = [
    "BudgetPool",
    "ConnectionBudget",
    "ConnectionBudgetExhausted",
    "EngineLRU",
    "EngineObserver",
]

logger = logging.getLogger(__name__)

# The share of the budget kept free ahead of demand, so that a request needing a connection
# rarely waits for a close: one slot in 25 (none below a budget of 25). Each reserved slot is one
# idle connection fewer to reuse.
DEFAULT_RESERVE_SHARE = 25
# The adaptive reserve's ceiling: one slot in five. Misses that keep outpacing the closes (a fleet
# whose active tenants outnumber the budget) need as many slots free as misses arrive while one
# close finishes; more would only give up idle connections that are reused.
MAX_RESERVE_SHARE = 5
# Seconds of connects without a wait in line after which the adaptive reserve gives a slot back.
RESERVE_SHRINK_SECONDS = 1.0
# The share of the budget that idle connections which have served more than one request may hold
# as protected (given up only when no probationary connection is idle). Below 1, so that a
# tenant whose traffic starts later can still earn a place over an old one's idle connection.
# In a simulation of 200 tenants with 1/k^1.1 traffic, 10 requests in flight and a budget of 50,
# 69 % of requests find an idle connection, against 60 % in one least-recently-used order.
DEFAULT_PROTECTED_SHARE = 0.8
# record.info key: the connection has been handed to a second checkout (or more)
_REUSED_KEY = "fastapi_tenancy.reused"
# Seconds a client is told to wait before retrying when the budget had no room.
BUDGET_RETRY_AFTER_SECONDS = 1


class ConnectionBudgetExhausted(ServiceUnavailable):
    """No connection of the budget came free in time; the request may be retried shortly."""

    headers: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"Retry-After": str(BUDGET_RETRY_AFTER_SECONDS)}
    )


class ConnectionBudget:
    """At most ``limit`` server connections across every `BudgetPool` that shares it.

    A slot is taken before a connection is opened and given back once its close has finished.
    Waiters are served first come, first served; one that waits longer than ``timeout`` seconds
    raises `ConnectionBudgetExhausted`. ``reserve`` slots are kept free by closing the least
    recently used idle connection in the background. By default (``None``) the reserve starts at
    ``limit // 25`` and adapts: a wait in line that a larger reserve would have spared adds a
    slot, up to ``limit // 5``, and a second of connects without one takes a slot back; an
    explicit ``reserve`` stays as given. Idle connections
    that served more than one request are protected, up to ``protected_share`` of ``limit``:
    they are given up only when no other is idle (0: one least-recently-used order).
    """

    def __init__(
        self,
        limit: int,
        *,
        timeout: float,
        reserve: int | None = None,
        protected_share: float = DEFAULT_PROTECTED_SHARE,
    ) -> None:
        if limit < 1:
            raise ConfigurationError(f"connection_budget must be at least 1, not {limit}")
        if timeout <= 0:
            raise ConfigurationError(f"budget_timeout must be positive, not {timeout}")
        self.limit = limit
        self.timeout = timeout
        base = limit // DEFAULT_RESERVE_SHARE if reserve is None else reserve
        if not 0 <= base < limit:
            raise ConfigurationError(f"reserve must be within 0..{limit - 1}, not {base}")
        self._base_reserve = self._reserve = base
        self._max_reserve = base if reserve is not None else max(base, limit // MAX_RESERVE_SHARE)
        self._reserve_changed = 0.0
        if not 0 <= protected_share <= 1:
            raise ConfigurationError(f"protected_share must be within 0..1, not {protected_share}")
        self.protected_limit = int(limit * protected_share)
        self._used = 0
        self._peak = 0
        self._opening = 0
        self._closing = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # idle connections of every pool, least recently used first: those used once, and those
        # reused (given up only when no connection used once is idle)
        self._probation: OrderedDict[ConnectionPoolEntry, BudgetPool] = OrderedDict()
        self._protected: OrderedDict[ConnectionPoolEntry, BudgetPool] = OrderedDict()
        self._connects = 0
        self._reuses = 0
        self._waits = 0
        self._waited = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._trims = 0
        self._close_errors = 0

    @property
    def reserve(self) -> int:
        """Slots kept free ahead of demand now (see the class docstring for how it adapts)."""
        return self._reserve

    @property
    def used(self) -> int:
        """Slots taken: connections open, being opened, or being closed."""
        return self._used

    @property
    def peak(self) -> int:
        """The most slots ever taken at once."""
        return self._peak

    @property
    def idle(self) -> int:
        """Connections open in some pool and not in use."""
        return len(self._probation) + len(self._protected)

    @property
    def protected(self) -> int:
        """Idle connections that served more than one request, given up last."""
        return len(self._protected)

    @property
    def connects(self) -> int:
        """Slots taken to open a connection (each a connect, unless it failed)."""
        return self._connects

    @property
    def waits(self) -> int:
        """Slots that were not free at once: the request waited in line."""
        return self._waits

    @property
    def waited(self) -> float:
        """Seconds spent waiting in line, all waits together."""
        return self._waited

    @property
    def reuses(self) -> int:
        """Checkouts that got a connection already open (an idle one, or one handed on)."""
        return self._reuses

    @property
    def waiting(self) -> int:
        """Requests waiting in line for a slot."""
        return len(self._waiters)

    @property
    def trims(self) -> int:
        """Idle connections closed to free a slot."""
        return self._trims

    @property
    def close_errors(self) -> int:
        """Background closes that failed; each is logged and otherwise ignored."""
        return self._close_errors

    async def acquire(self) -> None:
        """Take a slot for a new connection, waiting in line when none is free."""
        if self._closed:
            raise ServiceUnavailable("the tenant connection budget is closed")
        if not self._waiters and self._used < self.limit:
            self._take()
            self._shrink_reserve()
        else:
            await self._wait_in_line()
        self._connects += 1
        self._opening += 1
        self._make_room()

    def opened(self) -> None:
        """The connection a slot was taken for is open (or failed to open)."""
        self._opening -= 1

    async def _wait_in_line(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self._closing or self._probation or self._protected:
            # More slots kept free would have spared this wait: the idle connection closed for
            # it, or the close under way, could have been closed ahead of it.
            self._grow_reserve(loop.time())
        self._waiters.append(waiter)
        self._waits += 1
        started = loop.time()
        self._make_room()
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # the slot arrived as the wait ended: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise ConnectionBudgetExhausted(
                    f"no database connection within {self.timeout}s: all {self.limit} "
                    "connections of the budget are in use"
                ) from None
            raise
        finally:
            self._waited += loop.time() - started

    def release(self) -> None:
        """A connection is closed, or was never opened: its slot goes to the first waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._used -= 1

    def became_idle(self, record: ConnectionPoolEntry, pool: BudgetPool) -> None:
        """``record``'s connection went back to ``pool``: the most recently used idle one."""
        if record.info.get(_REUSED_KEY) and self.protected_limit:
            protected = self._protected
            protected[record] = pool
            while len(protected) > self.protected_limit:
                # the protected segment is full: its oldest goes back on probation, as the
                # newest there
                oldest, its_pool = protected.popitem(last=False)
                self._probation[oldest] = its_pool
        else:
            self._probation[record] = pool
        self._make_room()

    def reused(self, record: ConnectionPoolEntry) -> None:
        """``record``'s open connection is checked out again: it is protected when idle next."""
        self.in_use(record)
        record.info[_REUSED_KEY] = True
        self._reuses += 1

    def in_use(self, record: ConnectionPoolEntry) -> None:
        """``record`` left the idle connections (checked out, or closed by its pool)."""
        if self._probation.pop(record, None) is None:
            self._protected.pop(record, None)

    def close_in_background(self, record: ConnectionPoolEntry) -> None:
        """Close ``record``'s connection in a task; its slot is given back once it is closed."""
        self._closing += 1
        task = asyncio.get_running_loop().create_task(self._close(record))
        # The loop keeps only weak references to tasks; `drain` awaits the ones kept here.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Refuse new connections; the requests waiting for a slot get a 503."""
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ServiceUnavailable("the tenant connection budget is closed"))

    async def drain(self) -> None:
        """Wait until every background close has finished."""
        while self._tasks:
            # the tasks record their own errors and never raise
            await asyncio.gather(*self._tasks)

    def abandon(self) -> int:
        """Cancel the background closes (a shutdown deadline); how many there were."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def _take(self) -> None:
        self._used += 1
        self._peak = max(self._peak, self._used)

    def _grow_reserve(self, now: float) -> None:
        if self._reserve < self._max_reserve:
            self._reserve += 1
        self._reserve_changed = now

    def _shrink_reserve(self) -> None:
        if self._reserve > self._base_reserve:
            now = asyncio.get_running_loop().time()
            if now - self._reserve_changed >= RESERVE_SHRINK_SECONDS:
                self._reserve -= 1
                self._reserve_changed = now

    def _make_room(self) -> None:
        """Close idle connections, probationary before protected, until enough slots are free.

        Enough: one for every waiter, plus ``reserve`` or, when several connections are being
        opened at once, one for each of them but the first, since misses that come together tend
        to go on coming (a burst, or a fleet whose active tenants outnumber the budget). Closes
        already running count as free: their slots go to whoever asks next.
        """
        ahead = max(self._reserve, self._opening - 1)
        wanted = len(self._waiters) + ahead - (self.limit - self._used) - self._closing
        while wanted > 0 and (self._probation or self._protected):
            segment = self._probation or self._protected
            record, pool = segment.popitem(last=False)
            pool.give_up(record)
            self._trims += 1
            self.close_in_background(record)
            wanted -= 1

    async def _close(self, record: ConnectionPoolEntry) -> None:
        try:
            # The pool's close gives the slot back (BudgetPool._close_connection).
            await greenlet_spawn(record.close)
        except Exception as exc:
            # A failed close must not fail the request that made room, nor go unnoticed.
            self._close_errors += 1
            logger.warning("closing an idle tenant connection failed", exc_info=exc)
        finally:
            self._closing -= 1


class BudgetPool(Pool):
    """A tenant engine's pool whose connections count against a shared `ConnectionBudget`.

    It opens connections on demand, up to ``pool_size`` at once (so a tenant starts with one and
    grows with its concurrency), reuses the most recently returned one first, and keeps idle
    ones until the budget gives the least recently used idle connection of all pools up. A
    checkout that finds ``pool_size`` connections in use waits up to ``timeout`` seconds for one
    to come back, first come, first served, then raises SQLAlchemy's pool ``TimeoutError``.
    Used with asyncio engines only: waits happen inside SQLAlchemy's greenlet.
    """

    def __init__(
        self,
        creator: Any,
        *,
        budget: ConnectionBudget,
        pool_size: int,
        timeout: float,
        **kw: Any,
    ) -> None:
        super().__init__(creator, **kw)
        self._budget = budget
        self._size = pool_size
        self._timeout = timeout
        # idle connections of this pool, most recently returned last
        self._idle: list[ConnectionPoolEntry] = []
        # records that hold (or are opening) a connection: idle or checked out
        self._records = 0
        self._waiters: deque[asyncio.Future[ConnectionPoolEntry | None]] = deque()
        self._disposed = False
        open_connection = self._invoke_creator

        def open_within_budget(rec: ConnectionPoolEntry) -> DBAPIConnection:
            await_only(budget.acquire())
            try:
                return open_connection(rec)
            except BaseException:
                budget.release()
                raise
            finally:
                budget.opened()

        self._invoke_creator = open_within_budget

    @classmethod
    def adopt(cls, pool: QueuePool, budget: ConnectionBudget) -> BudgetPool:
        """A `BudgetPool` configured like ``pool`` (same creator, sizes, events and dialect)."""
        return cls(
            pool._creator,
            budget=budget,
            pool_size=pool.size() + max(pool._max_overflow, 0),
            timeout=pool.timeout(),
            recycle=pool._recycle,
            echo=pool.echo,
            logging_name=pool._orig_logging_name,
            reset_on_return=pool._reset_on_return,
            pre_ping=pool._pre_ping,
            _dispatch=pool.dispatch,
            dialect=pool._dialect,
        )

    def recreate(self) -> BudgetPool:
        return self.__class__(
            self._creator,
            budget=self._budget,
            pool_size=self._size,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def dispose(self) -> None:
        """Close the idle connections (checked-out ones are closed as they come back)."""
        self._disposed = True
        idle, self._idle = self._idle, []
        # All leave the budget's idle order before the first close yields to other tasks.
        for record in idle:
            self._budget.in_use(record)
        self._records -= len(idle)
        for record in idle:
            record.close()

    def status(self) -> str:
        return (
            f"BudgetPool size: {self._size} idle: {len(self._idle)} "
            f"checked out: {self.checkedout()} budget: {self._budget.used}/{self._budget.limit}"
        )

    def size(self) -> int:
        return self._size

    def timeout(self) -> float:
        return self._timeout

    def checkedin(self) -> int:
        return len(self._idle)

    def checkedout(self) -> int:
        return self._records - len(self._idle)

    def give_up(self, record: ConnectionPoolEntry) -> None:
        """The budget takes ``record`` (idle) to close it."""
        self._idle.remove(record)
        self._records -= 1

    def _close_connection(self, connection: DBAPIConnection, *, terminate: bool = False) -> None:
        try:
            super()._close_connection(connection, terminate=terminate)
        finally:
            self._budget.release()

    def _do_get(self) -> ConnectionPoolEntry:
        while True:
            if self._idle:
                record = self._idle.pop()
                self._budget.reused(record)
                return record
            if self._records < self._size:
                self._records += 1
                try:
                    return self._create_connection()
                except BaseException:
                    self._records -= 1
                    self._hand_on(None)
                    raise
            waiter: asyncio.Future[ConnectionPoolEntry | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiters.append(waiter)
            try:
                handed: ConnectionPoolEntry | None = await_only(self._wait(waiter))
            except TimeoutError:
                raise sa_exc.TimeoutError(
                    f"BudgetPool limit of size {self._size} reached, connection timed out, "
                    f"timeout {self._timeout:0.2f}",
                    code="3o7r",
                ) from None
            if handed is not None:
                self._budget.reused(handed)
                return handed
            # a connection of this pool was dropped: room to open another

    async def _wait(
        self, waiter: asyncio.Future[ConnectionPoolEntry | None]
    ) -> ConnectionPoolEntry | None:
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())  # it arrived as the wait ended: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _hand_on(self, record: ConnectionPoolEntry | None) -> bool:
        """Give ``record`` (or, with None, room for a new one) to the first waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(record)
                return True
        return False

    def _pass_on(self, record: ConnectionPoolEntry | None) -> None:
        if record is None:
            self._hand_on(None)
        else:
            self._do_return_conn(record)

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if record.dbapi_connection is None:
            # invalidated or detached: its connection is gone from this pool
            self._records -= 1
            self._hand_on(None)
        elif self._disposed:
            self._records -= 1
            self._budget.close_in_background(record)
        elif self._hand_on(record):
            pass
        else:
            self._idle.append(record)
            self._budget.became_idle(record, self)


class _Entry:
    """One engine and what the cache knows about it."""

    __slots__ = ("detached", "engine", "key", "pins")

    def __init__(self, key: str, engine: AsyncEngine) -> None:
        self.key = key
        self.engine = engine
        # leases holding the engine: a pinned engine is never disposed
        self.pins = 0
        # no longer cached (evicted, discarded or closing): disposed once unpinned
        self.detached = False


class EngineLRU:
    """A bounded LRU of per-tenant `AsyncEngine` objects, leased per session, within a budget.

    ``factory(url)`` builds the engine for a URL (give each a small pool, e.g. ``pool_size=2,
    max_overflow=0``: its size becomes the most connections the tenant may hold at once). A lease
    is one session's worth of work. The cache is task-safe within one event loop.

    * At most ``max_engines`` engines are cached. Using a key makes it the most recently used; a
      new key evicts the least recently used engine that no lease holds, and disposes it in a
      background task so the request that caused the eviction does not wait for it. When every
      cached engine is leased, the cache grows past ``max_engines`` rather than block, and shrinks
      back as leases end. An engine with no connection holds no server resource: size
      ``max_engines`` to the tenants active at once, and the budget to the connections.
    * An engine is never disposed while a lease holds it, even after `discard` or `close`: it is
      disposed when its last lease ends.
    * The server connections of all engines together never exceed ``connection_budget`` (see the
      module docstring): a request that gets no connection within ``budget_timeout`` seconds
      raises `ConnectionBudgetExhausted` (503). When idle connections must be given up, those
      that served only one request go first (``protected_share``: see `ConnectionBudget`).
    * `close` disposes every engine (waiting for active leases to end) and leaves no server
      connection open; a lease after `close` raises `ServiceUnavailable`.

    Example::

        engines = EngineLRU(
            lambda url: create_async_engine(url, pool_size=2, max_overflow=0),
            max_engines=500,
            connection_budget=80,
        )
        async with engines.lease("acme", "postgresql+asyncpg://app@db/tenant_acme") as engine:
            async with AsyncSession(engine) as session:
                await session.execute(select(Invoice))
        await engines.discard("acme")  # e.g. after purging the tenant
        await engines.close()  # at shutdown: no connection left open
    """

    def __init__(
        self,
        factory: Callable[[str], AsyncEngine],
        *,
        max_engines: int,
        connection_budget: int,
        budget_timeout: float = 30.0,
        reserve: int | None = None,
        protected_share: float = DEFAULT_PROTECTED_SHARE,
        observer: EngineObserver | None = None,
    ) -> None:
        if max_engines < 1:
            raise ConfigurationError(f"max_engines must be at least 1, not {max_engines}")
        self._factory = factory
        self._max_engines = max_engines
        self._budget = ConnectionBudget(
            connection_budget,
            timeout=budget_timeout,
            reserve=reserve,
            protected_share=protected_share,
        )
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
    def budget(self) -> ConnectionBudget:
        """The connection budget the engines' pools share."""
        return self._budget

    @property
    def open_connections(self) -> int:
        """Server connections of the budget now: open, being opened or being closed."""
        return self._budget.used

    @property
    def disposal_errors(self) -> int:
        """How many background disposals failed; each is logged and otherwise ignored."""
        return self._disposal_errors

    @asynccontextmanager
    async def lease(self, key: str, url: str | None = None) -> AsyncIterator[AsyncEngine]:
        """The engine for ``key``, held for the ``async with`` block.

        A key seen for the first time (or again after its eviction) gets ``factory(url)``, with
        ``url`` defaulting to ``key``; the URL is not kept. Raises `ServiceUnavailable` when the
        cache is closed.
        """
        entry = self._pin(key, key if url is None else url)
        try:
            yield entry.engine
        finally:
            self._unpin(entry)

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

        Waits for active leases to end; requests waiting for a slot of the budget raise
        `ServiceUnavailable`, as does every later `lease`. Bound the wait with
        ``asyncio.timeout``: when it is cancelled (a shutdown deadline) the engines still leased
        or being disposed are logged and their disposals cancelled.
        """
        self._closed = True
        self._budget.close()
        while self._cached:
            _, entry = self._cached.popitem(last=False)
            entry.detached = True
            if entry.pins == 0:
                self._schedule_disposal(entry)
        self._size_changed()
        try:
            while self._tasks or any(entry.pins for entry in self._live):
                if self._tasks:
                    # disposal tasks record their own errors and never raise
                    await asyncio.gather(*self._tasks)
                else:
                    await self._changed()
            await self._budget.drain()
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
            len(self._tasks) + self._budget.abandon(),
        )
        for task in list(self._tasks):
            task.cancel()

    def _pin(self, key: str, url: str) -> _Entry:
        if self._closed:
            raise ServiceUnavailable("the tenant engine cache is closed")
        # No await between the lookup and the insert: concurrent first leases of a key find the
        # entry the first one created, so each key gets exactly one engine.
        entry = self._cached.get(key)
        if entry is None:
            entry = _Entry(key, self._adopt(self._factory(url)))
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

    def _adopt(self, engine: AsyncEngine) -> AsyncEngine:
        # A queue pool (every server database, and SQLite files) is replaced by one that counts
        # against the budget; other pools (an in-memory SQLite database) keep their one
        # connection outside it.
        pool = engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            engine.sync_engine.pool = BudgetPool.adopt(pool, self._budget)
        return engine

    def _unpin(self, entry: _Entry) -> None:
        entry.pins -= 1
        if entry.pins == 0:
            if entry.detached:
                self._schedule_disposal(entry)
            else:
                self._evict_over_capacity()
        self._wake()

    def _schedule_disposal(self, entry: _Entry) -> asyncio.Task[None]:
        return self._spawn(self._dispose_for_good(entry))

    async def _dispose_for_good(self, entry: _Entry) -> None:
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
        finally:
            self._live.discard(entry)
            self._wake()

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

    async def _changed(self) -> None:
        """Wait until a lease ends or a disposal finishes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

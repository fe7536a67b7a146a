"""Audit trail: who did what to which tenant, written off the request path, and never lost quietly.

With ``enable_audit_logging``, lifecycle changes and tenant-scoped write requests (POST, PUT,
PATCH, DELETE) become `AuditRecord`s. They go into a bounded queue that a background task drains
into the sinks, so writing an audit record never delays or fails the request it describes.

What happens to a record when things go wrong:

* a sink that cannot be reached (`fastapi_tenancy.unavailable.is_unavailable`) is retried with
  exponential backoff for a few seconds; if it stays down, its records go to the spill file
  (`SpillFile`) and, in their order, so do the records after them, until a replay has written the
  file's lines to the sink: at start, and with backoff while this process runs;
* a batch the sink refuses for another reason is split in halves until the refused records are
  found; each is retried once sanitised (NUL bytes and lone surrogates replaced, strings cut to
  their column) and otherwise dropped, counted and logged, so one bad record never takes others
  with it. A sink that refuses every record is treated as down;
* `AuditTrail.close` writes what is queued within ``flush_timeout`` seconds and spills the rest;
  a record emitted after that is spilled at once;
* every record that is still lost (the queue was full, the sink refused it even sanitised, the
  spill file could not be written, a spill line is corrupt) is counted by reason in
  `AuditTrail.dropped_by_reason` (and ``fastapi_tenancy_audit_dropped_total``) and logged.

Each record carries a unique ``record_id``; `DatabaseAuditSink` inserts idempotently on it, so a
line replayed twice (the process died between the insert and the removal of the line) is written
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, inspect
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert

from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.observe.audit.spill import SpillFile, decode_line, encode_line
from fastapi_tenancy.observe.events import Hooks, RequestCompleted, TenantChanged

__all__ = [
    "DROP_REASONS",
    "AuditRecord",
    "AuditSink",
    "AuditTrail",
    "DatabaseAuditSink",
    "LoggingAuditSink",
    "SpillFile",
    "audit_table",
    "sanitised",
]

logger = logging.getLogger("fastapi_tenancy.audit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUEUE_SIZE = 10_000
BATCH_SIZE = 200
# How long a sink that cannot be reached is retried before its records go to the spill file.
RETRY_WINDOW = 3.0
FIRST_BACKOFF = 0.05
# The longest pause between two replays of the spill file while a sink stays down.
MAX_BACKOFF = 10.0
FLUSH_TIMEOUT = 5.0
# How long close waits for a cancelled writer to stop before spilling what it owed.
CANCEL_GRACE = 0.1
# Why a record was lost: the label values of fastapi_tenancy_audit_dropped_total.
DROP_REASONS = (
    "queue_full",  # emitted while QUEUE_SIZE records waited
    "rejected",  # the sink refused it, sanitised too, while it took the records beside it
    "spill_failed",  # owed to a sink that was down, and the spill file could not take it
    "corrupt_spill",  # a spill line that cannot be read back (e.g. cut short by a crash)
)
DROP_LOG_INTERVAL = 10.0


def _new_record_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action. ``actor`` is the JWT subject when a token named the tenant.

    ``record_id`` is unique per record; sinks use it to write a replayed record only once.
    """

    at: datetime
    tenant_id: str
    tenant: str
    action: str
    actor: str | None = None
    path: str | None = None
    status: int | None = None
    record_id: str = field(default_factory=_new_record_id)


class AuditSink(Protocol):
    """Where audit records end up. ``write`` gets batches in the order the actions happened.

    ``write`` should be all-or-nothing per batch. A sink may name itself with a ``name``
    attribute (default: its class name); spill lines remember the sink they are owed to by it.
    """

    async def start(self) -> None: ...

    async def write(self, records: Sequence[AuditRecord]) -> None: ...


class LoggingAuditSink:
    """Writes each record as one INFO line on the ``fastapi_tenancy.audit`` logger."""

    name = "logging"

    async def start(self) -> None:
        """Nothing to prepare."""

    async def write(self, records: Sequence[AuditRecord]) -> None:
        for record in records:
            logger.info("audit %s", {k: str(v) for k, v in asdict(record).items() if v is not None})


audit_metadata = MetaData()
audit_table = Table(
    "tenancy_audit",
    audit_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("tenant", String(63), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(255), nullable=True),
    Column("path", String(2048), nullable=True),
    Column("status", Integer, nullable=True),
    # Nullable: rows written before the column existed have none.
    Column("record_id", String(32), nullable=True),
    Index("ux_tenancy_audit_record_id", "record_id", unique=True),
    mysql_charset="utf8mb4",
)
_STRING_LENGTHS = {
    column.name: column.type.length
    for column in audit_table.columns
    if isinstance(column.type, String) and column.type.length is not None
}


# NUL (PostgreSQL text cannot hold it) and lone surrogates (not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def sanitised(record: AuditRecord) -> AuditRecord:
    """``record`` with text every database accepts: NUL and lone surrogates become U+FFFD, and
    each string is cut to its column's length."""
    changes: dict[str, Any] = {}
    for name in ("tenant_id", "tenant", "action", "actor", "path"):
        value = getattr(record, name)
        if value is None:
            continue
        clean = _UNSTORABLE.sub("\ufffd", value)
        limit = _STRING_LENGTHS.get(name)
        if limit is not None:
            clean = clean[:limit]
        if clean != value:
            changes[name] = clean
    return replace(record, **changes) if changes else record


class DatabaseAuditSink:
    """Inserts records into the ``tenancy_audit`` table, skipping a ``record_id`` already there."""

    name = "database"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def start(self) -> None:
        async with self._engine.begin() as conn:
            await conn.run_sync(audit_metadata.create_all)
            if await conn.run_sync(_has_record_id):
                return
        try:
            async with self._engine.begin() as conn:
                await _add_record_id(conn)
        except Exception:
            # Another process of the app may have added it at the same moment.
            async with self._engine.connect() as conn:
                if not await conn.run_sync(_has_record_id):
                    raise

    async def write(self, records: Sequence[AuditRecord]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(self._insert(), [asdict(record) for record in records])

    def _insert(self) -> Insert:
        backend = self._engine.dialect.name
        if backend == "postgresql":
            return postgresql.insert(audit_table).on_conflict_do_nothing(
                index_elements=["record_id"]
            )
        if backend == "sqlite":
            return sqlite.insert(audit_table).on_conflict_do_nothing(index_elements=["record_id"])
        if backend in ("mysql", "mariadb"):
            statement = mysql.insert(audit_table)
            # A duplicate record_id updates nothing; unlike INSERT IGNORE, other errors stay errors.
            return statement.on_duplicate_key_update(record_id=statement.inserted.record_id)
        return audit_table.insert()


def _has_record_id(sync_conn: Any) -> bool:
    columns = inspect(sync_conn).get_columns(audit_table.name)
    return any(column["name"] == "record_id" for column in columns)


async def _add_record_id(conn: AsyncConnection) -> None:
    # A table created by an earlier version: add the id column and its unique index.
    column = audit_table.c.record_id
    ddl_type = column.type.compile(dialect=conn.dialect)
    await conn.exec_driver_sql(f"ALTER TABLE {audit_table.name} ADD COLUMN record_id {ddl_type}")
    index = next(i for i in audit_table.indexes if i.name == "ux_tenancy_audit_record_id")
    await conn.run_sync(index.create)


def _sink_name(sink: AuditSink) -> str:
    return str(getattr(sink, "name", type(sink).__name__))


class _SinkDown(Exception):
    """The sink cannot take records now (unreachable, or it refuses every record)."""


class AuditTrail:
    """Turns events into audit records and feeds them to the sinks in the background.

    ``spill_path`` names the local file for records a sink cannot take (see the module
    docstring); without it a sink that is down is retried, with backoff, for as long as the
    process runs, while the bounded queue fills. ``on_drop(reason, count)`` is told about every
    lost record (the metrics use it).

    Example::

        trail = AuditTrail(
            [LoggingAuditSink(), DatabaseAuditSink(engine)], spill_path="/var/lib/app/audit.jsonl"
        )
        trail.subscribe(tenancy.hooks)
        await trail.start()   # replays what an earlier run spilled
        ...
        await trail.close()   # writes what is queued within flush_timeout, spills the rest
    """

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        *,
        queue_size: int = QUEUE_SIZE,
        spill_path: str | Path | None = None,
        flush_timeout: float = FLUSH_TIMEOUT,
        retry_window: float = RETRY_WINDOW,
        max_backoff: float = MAX_BACKOFF,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self._sinks = list(sinks)
        self._by_name = {_sink_name(sink): sink for sink in self._sinks}
        self._queue_size = queue_size
        self._queue: list[AuditRecord] = []
        self._arrived = asyncio.Event()
        self._spill = SpillFile(spill_path) if spill_path is not None else None
        self._flush_timeout = flush_timeout
        self._retry_window = retry_window
        self._max_backoff = max_backoff
        self._on_drop = on_drop
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        # The batch the writer is delivering, and the sinks still owed it.
        self._batch: list[AuditRecord] = []
        self._owed: list[AuditSink] = []
        # The spill append running in its thread, and the sink whose batch it holds: a thread
        # runs on when the writer is cancelled, so close() waits for it rather than spilling
        # that batch a second time.
        self._appending: tuple[asyncio.Future[None], str] | None = None
        # Sinks with lines in the spill file: their new records queue behind those lines.
        self._spilled: set[str] = set()
        self._replay_backoff = FIRST_BACKOFF
        self._next_replay: float | None = None
        self._last_drop_log = -DROP_LOG_INTERVAL
        self.dropped_by_reason = dict.fromkeys(DROP_REASONS, 0)
        self.failures = 0
        self.spilled = 0

    @property
    def dropped(self) -> int:
        """Records lost for any reason (see `dropped_by_reason`)."""
        return sum(self.dropped_by_reason.values())

    @property
    def pending(self) -> int:
        """Records queued in memory and not yet handed to the sinks."""
        return len(self._queue) + len(self._batch)

    def subscribe(self, hooks: Hooks) -> None:
        hooks.subscribe(TenantChanged, self._on_change)
        hooks.subscribe(RequestCompleted, self._on_request)

    async def start(self) -> None:
        if self._writer is not None:
            return
        for sink in self._sinks:
            await sink.start()
        if self._spill is not None:
            await asyncio.to_thread(self._spill.check)
            if await asyncio.to_thread(self._spill.read):
                # An earlier run left records: replay them before anything newer.
                self._spilled = set(self._by_name)
                self._next_replay = 0.0
        self._closing = self._closed = False
        self._writer = asyncio.create_task(self._run(), name="fastapi-tenancy-audit")

    async def close(self, *, flush_timeout: float | None = None) -> None:
        """Write what is queued within ``flush_timeout`` seconds (default: the trail's), spill the
        rest; records emitted from now on are spilled at once."""
        writer = self._writer
        if writer is None:
            return
        self._closing = True
        self._arrived.set()
        try:
            async with asyncio.timeout(
                self._flush_timeout if flush_timeout is None else flush_timeout
            ):
                await asyncio.shield(writer)
        except TimeoutError:
            logger.warning(
                "audit records not written within the flush timeout go to the spill file"
            )
        finally:
            if not writer.done():
                writer.cancel()
                # A driver may wait on the network while it handles the cancellation (closing a
                # stalled connection): what the writer owed is spilled below without waiting.
                await asyncio.wait({writer}, timeout=CANCEL_GRACE)
            self._writer = None
            self._closed = True
            owed, self._owed, batch, self._batch = self._owed, [], self._batch, []
            if self._appending is not None:
                appending, name = self._appending
                self._appending = None
                await asyncio.wait({appending})
                if not appending.cancelled() and appending.exception() is None:
                    # The cancelled writer's append went in: that sink is owed nothing more.
                    self.spilled += len(batch)
                    owed = [sink for sink in owed if _sink_name(sink) != name]
            queued, self._queue = self._queue, []
            self._spill_now([(_sink_name(sink), record) for sink in owed for record in batch])
            self._spill_now([(name, record) for record in queued for name in self._by_name])

    # Producing records (called from event handlers: never blocks, never raises).

    def _on_change(self, event: TenantChanged) -> None:
        tenant = event.tenant
        self._enqueue(
            AuditRecord(
                at=event.at, tenant_id=tenant.id, tenant=tenant.identifier, action=event.action
            )
        )

    def _on_request(self, event: RequestCompleted) -> None:
        if event.method not in WRITE_METHODS:
            return
        self._enqueue(
            AuditRecord(
                at=event.at,
                tenant_id=event.tenant.id,
                tenant=event.tenant.identifier,
                action=f"request:{event.method}",
                actor=event.subject,
                path=event.path[:2048],
                status=event.status,
            )
        )

    def _enqueue(self, record: AuditRecord) -> None:
        if self._closed:
            # The writer has stopped: the spill file is the only place left.
            self._spill_now([(name, record) for name in self._by_name])
        elif len(self._queue) >= self._queue_size:
            self._drop("queue_full", [record])
        else:
            self._queue.append(record)
            self._arrived.set()

    # The writer.

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._next_replay is not None and loop.time() >= self._next_replay:
                try:
                    await self._replay()
                except OSError:
                    # The file's lines stay where they are; the writer must live on regardless.
                    logger.exception("the audit spill file cannot be replayed; retrying later")
                    self._next_replay = loop.time() + self._max_backoff
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                timeout = None
                if self._next_replay is not None:
                    timeout = max(0.0, self._next_replay - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._arrived.wait()
                continue  # closing, a replay is due, or records arrived
            self._batch = self._queue[:BATCH_SIZE]
            del self._queue[:BATCH_SIZE]
            self._owed = list(self._sinks)
            for sink in self._sinks:
                await self._deliver(sink, self._batch)
                self._owed.remove(sink)
            self._batch = []

    async def _deliver(self, sink: AuditSink, records: list[AuditRecord]) -> None:
        name = _sink_name(sink)
        if name not in self._spilled:
            try:
                await self._write_with_retries(sink, records)
                return
            except _SinkDown:
                pass  # raised only when there is a spill file
        await self._spill_batch(name, records)

    async def _write_with_retries(self, sink: AuditSink, records: list[AuditRecord]) -> None:
        """Write ``records``, retrying with backoff while the sink is down: for ``retry_window``
        seconds if there is a spill file (then `_SinkDown`), for as long as it takes if not."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._retry_window
        backoff = FIRST_BACKOFF
        while True:
            try:
                await self._write_isolating(sink, records)
                return
            except _SinkDown:
                if self._spill is not None and loop.time() + backoff > give_up:
                    raise
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _write_isolating(self, sink: AuditSink, records: list[AuditRecord]) -> None:
        """Write ``records``, dropping (counted) the ones the sink refuses while it takes the
        others; raise `_SinkDown` if it cannot be reached or refuses them all."""
        refused = await self._write_or_find_refused(sink, records)
        if not refused:
            return
        if len(refused) == len(records):
            # Not one record went in: the sink is broken (a missing table, a revoked grant),
            # not the records. Keep them for later rather than dropping them.
            raise _SinkDown(f"{_sink_name(sink)} refused every record")
        self._drop("rejected", [record for record, _ in refused])
        for record, exc in refused:
            logger.error(
                "audit sink %s refused record %s (tenant %r, action %r), sanitised too: %s",
                _sink_name(sink),
                record.record_id,
                record.tenant,
                record.action,
                type(exc).__name__,
            )

    async def _write_or_find_refused(
        self, sink: AuditSink, records: list[AuditRecord]
    ) -> list[tuple[AuditRecord, Exception]]:
        try:
            await sink.write(records)
            return []
        except Exception as exc:
            self.failures += 1
            if is_unavailable(exc):
                cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
                logger.warning(
                    "audit sink %s is unavailable (%s); its records wait",
                    _sink_name(sink),
                    type(cause).__name__,
                )
                raise _SinkDown(_sink_name(sink)) from exc
            error = exc
        if len(records) > 1:
            # Halve until the refused records are found: the others are written.
            middle = len(records) // 2
            return await self._write_or_find_refused(
                sink, records[:middle]
            ) + await self._write_or_find_refused(sink, records[middle:])
        clean = sanitised(records[0])
        if clean == records[0]:
            return [(records[0], error)]
        try:
            await sink.write([clean])
        except Exception as exc:
            self.failures += 1
            if is_unavailable(exc):
                raise _SinkDown(_sink_name(sink)) from exc
            return [(records[0], exc)]
        logger.warning(
            "audit sink %s refused record %s; written with its text sanitised",
            _sink_name(sink),
            clean.record_id,
        )
        return []

    async def _replay(self) -> None:
        """Write the spill file's lines to their sinks; keep what a sink still cannot take."""
        assert self._spill is not None
        loop = asyncio.get_running_loop()
        lines = await asyncio.to_thread(self._spill.read)
        done: set[str] = set()
        corrupt: list[str] = []
        owed: dict[str, list[tuple[str, AuditRecord]]] = {}
        for line in lines:
            try:
                name, record = decode_line(line)
            except (ValueError, KeyError, TypeError):
                corrupt.append(line)
                continue
            if name not in self._by_name:
                continue  # another process's sink: left for it
            owed.setdefault(name, []).append((line, record))
        down: set[str] = set()
        for name, entries in owed.items():
            sink = self._by_name[name]
            for start in range(0, len(entries), BATCH_SIZE):
                chunk = entries[start : start + BATCH_SIZE]
                try:
                    await self._write_isolating(sink, [record for _, record in chunk])
                except _SinkDown:
                    down.add(name)
                    break
                done.update(line for line, _ in chunk)
        if corrupt:
            logger.error("%d audit spill lines cannot be read and are dropped", len(corrupt))
            self._count("corrupt_spill", len(corrupt))
            done.update(corrupt)
        if done:
            await asyncio.to_thread(self._spill.remove, done)
            logger.info("replayed %d audit records from the spill file", len(done) - len(corrupt))
        self._spilled = down
        if down:
            self._next_replay = loop.time() + self._replay_backoff
            self._replay_backoff = min(self._replay_backoff * 2, self._max_backoff)
        else:
            self._next_replay = None
            self._replay_backoff = FIRST_BACKOFF

    # Spilling and dropping.

    async def _spill_batch(self, name: str, records: list[AuditRecord]) -> None:
        """Append ``records``, owed to sink ``name``, to the spill file from the writer."""
        assert self._spill is not None
        lines = [encode_line(name, record) for record in records]
        appending = asyncio.get_running_loop().run_in_executor(None, self._spill.append, lines)
        self._appending = (appending, name)
        # asyncio.wait does not cancel what it waits for: a writer cancelled at close leaves the
        # append to finish in its thread, and close() counts it, once.
        await asyncio.wait({appending})
        self._appending = None
        try:
            appending.result()
        except OSError:
            logger.exception("the audit spill file %s cannot be written", self._spill.path)
            self._drop("spill_failed", records)
            return
        self.spilled += len(records)
        if name not in self._spilled:
            self._spilled.add(name)
            loop = asyncio.get_running_loop()
            self._next_replay = loop.time() + self._replay_backoff

    def _spill_now(self, entries: list[tuple[str, AuditRecord]]) -> None:
        """Spill from outside the writer (at and after close), in this thread."""
        if not entries:
            return
        if self._spill is None:
            logger.error("no audit spill file: %d records owed to sinks are lost", len(entries))
            self._drop("spill_failed", [record for _, record in entries])
            return
        try:
            self._spill.append([encode_line(*e) for e in entries])
        except OSError:
            logger.exception("the audit spill file %s cannot be written", self._spill.path)
            self._drop("spill_failed", [record for _, record in entries])
            return
        self.spilled += len(entries)

    def _drop(self, reason: str, records: list[AuditRecord]) -> None:
        self._count(reason, len(records))
        if reason != "queue_full":
            return  # the callers log these with their cause
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_drop_log >= DROP_LOG_INTERVAL:
            self._last_drop_log = loop.time()
            logger.error(
                "the audit queue is full (%d records): dropping records (%d so far)",
                self._queue_size,
                self.dropped_by_reason["queue_full"],
            )

    def _count(self, reason: str, count: int) -> None:
        self.dropped_by_reason[reason] += count
        if self._on_drop is not None:
            self._on_drop(reason, count)

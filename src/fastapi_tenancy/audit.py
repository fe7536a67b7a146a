"""Audit trail: who did what to which tenant, written off the request path.

With ``enable_audit_logging``, lifecycle changes and tenant-scoped write requests (POST, PUT,
PATCH, DELETE) become `AuditRecord`s. They go into a bounded queue that a background task drains
into the sinks, so writing an audit record never delays or fails the request it describes: a full
queue drops the record and counts it, and a failing sink is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy.events import Hooks, RequestCompleted, TenantChanged

__all__ = [
    "AuditRecord",
    "AuditSink",
    "AuditTrail",
    "DatabaseAuditSink",
    "LoggingAuditSink",
    "audit_table",
]

logger = logging.getLogger("fastapi_tenancy.audit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUEUE_SIZE = 10_000
BATCH_SIZE = 200


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action. ``actor`` is the JWT subject when a token named the tenant."""

    at: datetime
    tenant_id: str
    tenant: str
    action: str
    actor: str | None = None
    path: str | None = None
    status: int | None = None


class AuditSink(Protocol):
    """Where audit records end up. ``write`` gets batches in the order the actions happened."""

    async def start(self) -> None: ...

    async def write(self, records: Sequence[AuditRecord]) -> None: ...


class LoggingAuditSink:
    """Writes each record as one INFO line on the ``fastapi_tenancy.audit`` logger."""

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
    mysql_charset="utf8mb4",
)


class DatabaseAuditSink:
    """Inserts records into the ``tenancy_audit`` table of the central database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def start(self) -> None:
        async with self._engine.begin() as conn:
            await conn.run_sync(audit_metadata.create_all)

    async def write(self, records: Sequence[AuditRecord]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(audit_table.insert(), [asdict(record) for record in records])


class AuditTrail:
    """Turns events into audit records and feeds them to the sinks in the background.

    Example::

        trail = AuditTrail([LoggingAuditSink(), DatabaseAuditSink(engine)])
        trail.subscribe(tenancy.hooks)
        await trail.start()
        ...
        await trail.close()   # writes what is queued, then stops
    """

    def __init__(self, sinks: Sequence[AuditSink], *, queue_size: int = QUEUE_SIZE) -> None:
        self._sinks = list(sinks)
        self._queue: asyncio.Queue[AuditRecord | None] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failures = 0

    def subscribe(self, hooks: Hooks) -> None:
        hooks.subscribe(TenantChanged, self._on_change)
        hooks.subscribe(RequestCompleted, self._on_request)

    async def start(self) -> None:
        if self._writer is None:
            for sink in self._sinks:
                await sink.start()
            self._writer = asyncio.create_task(self._drain(), name="fastapi-tenancy-audit")

    async def close(self) -> None:
        if self._writer is None:
            return
        await self._queue.put(None)
        await self._writer
        self._writer = None

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
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [] if first is None else [first]
            stop = first is None
            while not stop and len(batch) < BATCH_SIZE and not self._queue.empty():
                record = self._queue.get_nowait()
                if record is None:
                    stop = True
                else:
                    batch.append(record)
            if batch:
                await self._write(batch)
            if stop:
                return

    async def _write(self, batch: list[AuditRecord]) -> None:
        for sink in self._sinks:
            try:
                await sink.write(batch)
            except Exception:
                self.failures += 1
                logger.warning("audit sink %r failed", sink, exc_info=True)

"""Audit: lifecycle changes and tenant writes are recorded, and auditing never hurts a request."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

import httpx
import jwt as pyjwt
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, MetaData, Table, select
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_tenancy import Tenancy, TenancyConfig, Tenant
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.observe import Event, Hooks, RequestCompleted, TenancyObserver, TenantChanged
from fastapi_tenancy.observe.audit import (
    AuditRecord,
    AuditTrail,
    DatabaseAuditSink,
    SpillFile,
    audit_table,
)
from fastapi_tenancy.observe.audit.spill import decode_line, encode_line
from tests.support import apps
from tests.support.backends import all_databases
from tests.support.models import Base
from tests.support.polling import eventually


@all_databases
async def test_lifecycle_and_write_requests_are_recorded_with_the_token_subject(
    database_url: str, tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(48)
    config = TenancyConfig(
        database_url=database_url,
        tenant_metadata=Base.metadata,
        enable_audit_logging=True,
        audit_spill_path=str(tmp_path / "spill.jsonl"),
        resolution_strategy="jwt",
        jwt_secret=secret,
    )
    token = pyjwt.encode(
        {"tenant": "acme", "sub": "alice", "exp": int(time.time()) + 60}, secret, "HS256"
    )
    app = apps.create_app(config)
    async with LifespanManager(app):
        tenancy: Tenancy = app.state.tenancy
        await tenancy.create_tenant("acme")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/items", headers=headers)).status_code == 200
            created = await client.post("/items", params={"name": "x"}, headers=headers)
            assert created.status_code == 200
        await tenancy.suspend_tenant("acme")
        await tenancy.close()  # flushes the audit queue
        async with tenancy.engine.connect() as conn:
            rows = (await conn.execute(select(audit_table).order_by(audit_table.c.id))).all()
        await tenancy.engine.dispose()
    actions = [(row.action, row.actor, row.path, row.status) for row in rows]
    assert actions == [
        ("create", None, None, None),
        ("start_provisioning", None, None, None),
        ("provision", None, None, None),
        ("request:POST", "alice", "/items", 200),
        ("suspend", None, None, None),
    ]
    assert {row.tenant for row in rows} == {"acme"}


class BrokenSink:
    """Refuses every batch, as a sink with a missing table or a revoked grant does."""

    def __init__(self, name: str = "BrokenSink") -> None:
        self.name = name
        self.calls = 0

    async def start(self) -> None:
        pass

    async def write(self, records: Sequence[AuditRecord]) -> None:
        self.calls += 1
        raise RuntimeError("disk full")


class ListSink:
    """Keeps what it is given; ``release`` holds writes back until it is set."""

    def __init__(self, name: str = "list") -> None:
        self.name = name
        self.written: list[AuditRecord] = []
        self.release = asyncio.Event()
        self.release.set()

    async def start(self) -> None:
        pass

    async def write(self, records: Sequence[AuditRecord]) -> None:
        await self.release.wait()
        self.written.extend(records)


class HangingSink:
    """Never answers, like a database behind a blackholed network."""

    name = "list"

    async def start(self) -> None:
        pass

    async def write(self, records: Sequence[AuditRecord]) -> None:
        await asyncio.Event().wait()


class FailingHooks(TenancyObserver):
    def __init__(self) -> None:
        self.count = 0

    def hook_failed(self, event: Event) -> None:
        self.count += 1


def changed(identifier: str) -> TenantChanged:
    return TenantChanged(action="suspend", tenant=Tenant(identifier=identifier), previous=None)


async def test_a_sink_that_refuses_everything_is_retried_then_its_records_are_spilled(
    tmp_path: Path,
) -> None:
    hooks = Hooks(failing_hooks := FailingHooks())
    broken = BrokenSink()
    spill = tmp_path / "spill.jsonl"
    trail = AuditTrail([broken], spill_path=spill, retry_window=0.2)
    trail.subscribe(hooks)
    await trail.start()
    await hooks.emit(changed("acme"))
    await eventually(lambda: trail.spilled == 1)
    await trail.close()
    assert broken.calls > 1  # retried with backoff before spilling
    assert trail.failures == broken.calls
    assert trail.dropped == 0
    assert failing_hooks.count == 0  # the trail's own subscription never raised
    assert len(SpillFile(spill).read()) == 1

    # The next run with a working sink of the same name writes the record once.
    sink = ListSink(name="BrokenSink")
    replaying = AuditTrail([sink], spill_path=spill)
    await replaying.start()
    await eventually(lambda: len(sink.written) == 1)
    await replaying.close()
    assert [record.tenant for record in sink.written] == ["acme"]
    assert SpillFile(spill).read() == []


async def test_without_a_spill_file_a_failing_sink_is_retried_until_shutdown_then_counted() -> None:
    hooks = Hooks(failing_hooks := FailingHooks())
    trail = AuditTrail([BrokenSink()])
    trail.subscribe(hooks)
    await trail.start()
    await hooks.emit(changed("acme"))
    await eventually(lambda: trail.failures >= 3)
    await trail.close(flush_timeout=0.1)
    assert trail.dropped_by_reason["spill_failed"] == 1
    assert failing_hooks.count == 0  # the trail's own subscription never raised


async def test_a_full_queue_drops_records_counted_instead_of_blocking() -> None:
    hooks = Hooks()
    sink = ListSink()
    sink.release.clear()
    dropped: list[tuple[str, int]] = []
    trail = AuditTrail([sink], queue_size=2, on_drop=lambda r, n: dropped.append((r, n)))
    trail.subscribe(hooks)
    await trail.start()
    for n in range(10):
        await asyncio.wait_for(hooks.emit(changed(f"t{n}")), timeout=1)
    sink.release.set()
    await trail.close()
    assert trail.dropped_by_reason["queue_full"] > 0
    assert trail.dropped == trail.dropped_by_reason["queue_full"]
    assert len(sink.written) + trail.dropped == 10
    assert sum(n for reason, n in dropped if reason == "queue_full") == trail.dropped


async def test_records_emitted_during_and_after_close_are_written_or_spilled(
    tmp_path: Path,
) -> None:
    hooks = Hooks()
    sink = ListSink()
    sink.release.clear()
    spill = tmp_path / "spill.jsonl"
    trail = AuditTrail([sink], spill_path=spill)
    trail.subscribe(hooks)
    await trail.start()
    await hooks.emit(changed("before"))
    closing = asyncio.create_task(trail.close())
    await asyncio.sleep(0)
    await hooks.emit(changed("during"))
    sink.release.set()
    await closing
    await hooks.emit(changed("after"))
    spilled = [decode_line(line)[1].tenant for line in SpillFile(spill).read()]
    assert sorted([record.tenant for record in sink.written] + spilled) == [
        "after",
        "before",
        "during",
    ]
    assert spilled == ["after"]
    assert trail.dropped == 0


async def test_close_honours_its_deadline_and_spills_what_the_sink_did_not_take(
    tmp_path: Path,
) -> None:
    hooks = Hooks()
    spill = tmp_path / "spill.jsonl"
    trail = AuditTrail([HangingSink()], spill_path=spill)
    trail.subscribe(hooks)
    await trail.start()
    for n in range(5):
        await hooks.emit(changed(f"t{n}"))
    # Bounded by the deadline, not by the sink, which never returns: a close that waited for it
    # would run into this far longer bound.
    async with asyncio.timeout(30):
        await trail.close(flush_timeout=0.3)
    assert sorted(decode_line(line)[1].tenant for line in SpillFile(spill).read()) == [
        f"t{n}" for n in range(5)
    ]
    assert trail.dropped == 0


class SlowSpillFile(SpillFile):
    """Appends after ``delay`` seconds in its thread, so that a close cancels the writer while
    the append runs: a thread cannot be cancelled, and its lines go in regardless."""

    delay = 0.0

    def append(self, lines: Sequence[str]) -> None:
        time.sleep(self.delay)
        super().append(lines)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.integers(min_value=1, max_value=30),
    sinks=st.integers(min_value=1, max_value=3),
    delay=st.sampled_from([0.0, 0.005, 0.02, 0.06]),
    flush_timeout=st.sampled_from([0.0, 0.01, 0.03, 0.1]),
)
async def test_every_record_a_closing_trail_owes_is_spilled_once_per_sink(
    tmp_path: Path, records: int, sinks: int, delay: float, flush_timeout: float
) -> None:
    spill = tmp_path / f"spill-{secrets.token_hex(4)}.jsonl"
    hooks = Hooks()
    broken = [BrokenSink(name=f"broken{n}") for n in range(sinks)]
    trail = AuditTrail(broken, spill_path=spill, retry_window=0)
    trail.subscribe(hooks)
    with patch("fastapi_tenancy.observe.audit.SpillFile", SlowSpillFile):
        SlowSpillFile.delay = delay
        await trail.start()
        for n in range(records):
            await hooks.emit(changed(f"t{n}"))
        await asyncio.sleep(delay / 2)  # the writer is mid-append for some examples
        await trail.close(flush_timeout=flush_timeout)
    lines = [decode_line(line) for line in SpillFile(spill).read()]
    owed = [(name, record.record_id) for name, record in lines]
    assert len(set(owed)) == len(owed), "a record was spilled twice for one sink"
    assert len(owed) == records * sinks
    assert trail.spilled == len(owed)
    assert trail.dropped == 0


async def test_the_spill_file_is_private_and_corrupt_lines_are_counted(tmp_path: Path) -> None:
    spill = tmp_path / "audit" / "spill.jsonl"
    record = AuditRecord(at=datetime.now(UTC), tenant_id="1", tenant="acme", action="suspend")
    SpillFile(spill).append([encode_line("list", record), '{"sink": "list", "rec'])
    assert stat.S_IMODE(os.stat(spill).st_mode) == 0o600
    sink = ListSink()
    dropped: list[tuple[str, int]] = []
    trail = AuditTrail([sink], spill_path=spill, on_drop=lambda r, n: dropped.append((r, n)))
    await trail.start()
    await eventually(lambda: len(sink.written) == 1)
    await trail.close()
    assert sink.written == [record]
    assert dropped == [("corrupt_spill", 1)]
    assert SpillFile(spill).read() == []


async def test_an_unwritable_spill_location_fails_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    trail = AuditTrail([ListSink()], spill_path=blocker / "spill.jsonl")
    with pytest.raises(ConfigurationError, match="TENANCY_AUDIT_SPILL_PATH"):
        await trail.start()


class PickySink:
    """Refuses any batch holding a record whose path contains ``bad``, as a database refuses a
    value it cannot store."""

    name = "list"

    def __init__(self) -> None:
        self.written: list[AuditRecord] = []

    async def start(self) -> None:
        pass

    async def write(self, records: Sequence[AuditRecord]) -> None:
        if any("bad" in (record.path or "") for record in records):
            raise ValueError("value refused")
        self.written.extend(records)


async def test_one_refused_record_is_dropped_counted_and_the_rest_of_its_batch_written(
    tmp_path: Path,
) -> None:
    sink = PickySink()
    trail = AuditTrail([sink], spill_path=tmp_path / "spill.jsonl")
    now = datetime.now(UTC)
    paths = [f"/items/{n}" for n in range(50)]
    paths[17] = "/bad"
    for path in paths:
        trail._enqueue(
            AuditRecord(at=now, tenant_id="1", tenant="acme", action="request:POST", path=path)
        )
    await trail.start()
    await trail.close()
    assert [record.path for record in sink.written] == [p for p in paths if p != "/bad"]
    assert trail.dropped_by_reason["rejected"] == 1
    assert trail.dropped == 1


@all_databases
async def test_a_nul_byte_in_one_record_never_fails_the_others(database_url: str) -> None:
    hostile = {7: "/items/\x00evil", 11: "/items/\ud800lone"}
    engine = create_async_engine(database_url)
    try:
        sink = DatabaseAuditSink(engine)
        trail = AuditTrail([sink])
        await trail.start()
        now = datetime.now(UTC)
        for n in range(20):
            path = hostile.get(n, f"/items/{n}")
            trail._enqueue(
                AuditRecord(at=now, tenant_id="1", tenant="acme", action="request:POST", path=path)
            )
        await trail.close()
        async with engine.connect() as conn:
            rows = (await conn.execute(select(audit_table).order_by(audit_table.c.id))).all()
    finally:
        await engine.dispose()
    assert trail.dropped == 0
    assert len(rows) == 20
    stored = [row.path for row in rows]
    assert [p for n, p in enumerate(stored) if n not in hostile] == [
        f"/items/{n}" for n in range(20) if n not in hostile
    ]
    # Stored where the database refused them, with the unstorable character marked.
    assert "evil" in stored[7]
    assert "lone" in stored[11]
    if database_url.startswith("postgresql"):
        assert stored[7] == "/items/\ufffdevil"  # PostgreSQL text cannot hold NUL


@all_databases
async def test_a_record_written_twice_is_stored_once(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        sink = DatabaseAuditSink(engine)
        await sink.start()
        record = AuditRecord(at=datetime.now(UTC), tenant_id="1", tenant="acme", action="suspend")
        other = AuditRecord(at=datetime.now(UTC), tenant_id="1", tenant="acme", action="activate")
        await sink.write([record])
        await sink.write([record, other])
        async with engine.connect() as conn:
            rows = (await conn.execute(select(audit_table).order_by(audit_table.c.id))).all()
    finally:
        await engine.dispose()
    assert [(row.record_id, row.action) for row in rows] == [
        (record.record_id, "suspend"),
        (other.record_id, "activate"),
    ]


@all_databases
async def test_a_table_from_before_record_ids_gets_the_column_at_start(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        old = MetaData()
        old_table = Table(
            "tenancy_audit",
            old,
            *[
                Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                for c in audit_table.columns
                if c.name != "record_id"
            ],
        )
        async with engine.begin() as conn:
            await conn.run_sync(old.create_all)
            await conn.execute(
                old_table.insert(),
                [{"at": datetime.now(UTC), "tenant_id": "1", "tenant": "a", "action": "create"}],
            )
        sink = DatabaseAuditSink(engine)
        await sink.start()
        await sink.start()  # a second process starting later finds the column
        record = AuditRecord(at=datetime.now(UTC), tenant_id="1", tenant="a", action="suspend")
        await sink.write([record])
        await sink.write([record])
        async with engine.connect() as conn:
            rows = (await conn.execute(select(audit_table).order_by(audit_table.c.id))).all()
    finally:
        await engine.dispose()
    assert [(row.action, row.record_id) for row in rows] == [
        ("create", None),
        ("suspend", record.record_id),
    ]


async def test_without_audit_requests_are_not_observed(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with Tenancy(config) as tenancy:
        assert tenancy.audit is None
        assert not tenancy.hooks.wants(RequestCompleted)


async def test_lost_records_are_counted_in_the_metric(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    spill.write_text('{"sink": "database", "record": {"cut short\n')
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        enable_audit_logging=True,
        enable_metrics=True,
        audit_spill_path=str(spill),
    )
    async with Tenancy(config) as tenancy:
        assert tenancy.metrics is not None
        assert tenancy.metrics.registry is not None
        registry = tenancy.metrics.registry
        name = "fastapi_tenancy_audit_dropped_total"
        await eventually(
            lambda: registry.get_sample_value(name, {"reason": "corrupt_spill"}) == 1.0
        )
        assert registry.get_sample_value(name, {"reason": "queue_full"}) == 0.0


def test_processes_sharing_the_spill_file_never_lose_a_line(tmp_path: Path) -> None:
    # Writers append while a replayer removes what it has "written": every line ends up either
    # removed once or still in the file. (flock excludes separate opens, as between processes.)
    path = tmp_path / "spill.jsonl"
    now = datetime.now(UTC)
    written: list[str] = []
    removed: set[str] = set()

    def writer(n: int) -> None:
        for i in range(100):
            record = AuditRecord(at=now, tenant_id=str(n), tenant=f"t{n}", action=str(i))
            line = encode_line("database", record)
            SpillFile(path).append([line])
            written.append(line)

    def replayer(stop: threading.Event) -> None:
        while not stop.is_set():
            lines = SpillFile(path).read()
            done = set(lines[: len(lines) // 2])
            SpillFile(path).remove(done)
            removed.update(done)

    stop = threading.Event()
    replaying = threading.Thread(target=replayer, args=(stop,))
    replaying.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    replaying.join()
    left = SpillFile(path).read()
    assert len(written) == 400
    assert sorted(left + sorted(removed)) == sorted(written)
    assert not removed & set(left)


async def test_the_writer_outlives_a_spill_file_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = Hooks()
    spill = tmp_path / "spill.jsonl"
    trail = AuditTrail([BrokenSink()], spill_path=spill, retry_window=0.05, max_backoff=0.05)
    trail.subscribe(hooks)
    await trail.start()
    await hooks.emit(changed("first"))
    await eventually(lambda: trail.spilled == 1)
    spill.unlink()
    spill.mkdir()  # the next replay's read fails
    await eventually(
        lambda: any("cannot be replayed" in record.getMessage() for record in caplog.records)
    )
    spill.rmdir()
    await hooks.emit(changed("second"))
    await eventually(lambda: trail.spilled == 2)
    await trail.close()
    assert [decode_line(line)[1].tenant for line in SpillFile(spill).read()] == ["second"]

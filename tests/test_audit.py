"""Audit: lifecycle changes and tenant writes are recorded, and auditing never hurts a request."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import jwt as pyjwt
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from fastapi_tenancy import Tenancy, TenancyConfig, Tenant
from fastapi_tenancy.audit import AuditRecord, AuditTrail, audit_table
from fastapi_tenancy.events import Hooks, RequestCompleted, TenantChanged
from tests import apps
from tests.backends import all_databases
from tests.models import Base


@all_databases
async def test_lifecycle_and_write_requests_are_recorded_with_the_token_subject(
    database_url: str,
) -> None:
    secret = secrets.token_urlsafe(48)
    config = TenancyConfig(
        database_url=database_url,
        tenant_metadata=Base.metadata,
        enable_audit_logging=True,
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
    async def start(self) -> None:
        pass

    async def write(self, records: Sequence[AuditRecord]) -> None:
        raise RuntimeError("disk full")


class SlowSink:
    def __init__(self) -> None:
        self.written: list[AuditRecord] = []
        self.release = asyncio.Event()

    async def start(self) -> None:
        pass

    async def write(self, records: Sequence[AuditRecord]) -> None:
        await self.release.wait()
        self.written.extend(records)


def changed(identifier: str) -> TenantChanged:
    return TenantChanged(action="suspend", tenant=Tenant(identifier=identifier), previous=None)


async def test_a_failing_sink_is_counted_and_never_raises() -> None:
    hooks = Hooks()
    trail = AuditTrail([BrokenSink()])
    trail.subscribe(hooks)
    await trail.start()
    await hooks.emit(changed("acme"))
    await trail.close()
    assert trail.failures == 1
    assert hooks.failures == 0


async def test_a_full_queue_drops_records_instead_of_blocking() -> None:
    hooks = Hooks()
    sink = SlowSink()
    trail = AuditTrail([sink], queue_size=2)
    trail.subscribe(hooks)
    await trail.start()
    for n in range(10):
        await asyncio.wait_for(hooks.emit(changed(f"t{n}")), timeout=1)
    sink.release.set()
    await trail.close()
    assert trail.dropped > 0
    assert len(sink.written) + trail.dropped == 10


async def test_without_audit_requests_are_not_observed(tmp_path: Path) -> None:
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with Tenancy(config) as tenancy:
        assert tenancy.audit is None
        assert not tenancy.hooks.wants(RequestCompleted)

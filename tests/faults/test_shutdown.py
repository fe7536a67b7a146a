"""SIGTERM while the network to the central database drops every packet: the server still exits
within ``shutdown_timeout``, and the audit records it could not write are spilled, then written
once at the next start.

The app runs as a real uvicorn process; its central database sits behind a `FaultProxy` that is
paused (a blackhole: connections stay open, nothing comes back), so closing a connection, writing
an audit record and disposing the pool all wait forever unless the shutdown deadline ends them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.observe.audit import SpillFile, audit_table
from fastapi_tenancy.observe.audit.spill import decode_line
from fastapi_tenancy.store.memory import MemoryTenantStore
from tests.support.backends import isolation_config
from tests.support.fault_proxy import FaultProxy
from tests.support.http_servers import server_process
from tests.support.polling import eventually
from tests.support.services import free_port

TENANT = "stalled"
SHUTDOWN_TIMEOUT = 3.0
FLUSH_TIMEOUT = 1.0
WRITES = 5

CASES = [
    pytest.param(("row", "postgres"), marks=pytest.mark.postgres, id="postgres"),
    pytest.param(("row", "mysql"), marks=pytest.mark.mysql, id="mysql"),
]


async def request_rows(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).where(audit_table.c.action == "request:POST")
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("isolation_case", CASES, indirect=True)
async def test_sigterm_during_a_network_stall_exits_within_the_shutdown_deadline(
    isolation_case: tuple[str, str], tmp_path: Path
) -> None:
    url = isolation_case[1]
    spill = tmp_path / "audit-spill.jsonl"
    config = isolation_config(
        isolation_case, enable_audit_logging=True, audit_spill_path=str(spill)
    )
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant(TENANT)
    async with FaultProxy.for_url(url, 5432 if url.startswith("postgres") else 3306) as proxy:
        env = {name: value for name, value in os.environ.items() if not name.startswith("TENANCY_")}
        env |= {
            "TENANCY_DATABASE_URL": proxy.url_for(url),
            "TENANCY_ENABLE_AUDIT_LOGGING": "true",
            "TENANCY_AUDIT_SPILL_PATH": str(spill),
            "TENANCY_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
            "TENANCY_AUDIT_FLUSH_TIMEOUT": str(FLUSH_TIMEOUT),
        }
        port = free_port()
        command = [
            sys.executable,
            *("-m", "uvicorn", "tests.faults.shutdown_app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "info"),
        ]
        log = tmp_path / "uvicorn.log"
        async with server_process(
            command, port=port, env=env, ready_path="/health/live", log=log
        ) as (base_url, process):
            headers = {"X-Tenant-ID": TENANT}
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
                assert (await client.post("/notes", headers=headers)).status_code == 200
                assert (await client.get("/health/warm")).status_code == 200
            # The first record is written: the app holds pooled connections through the proxy.
            await eventually(lambda: _at_least(url, 1))

            proxy.pause()
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
                for _ in range(WRITES):
                    # The tenant is cached: served without the database, audited for later.
                    assert (await client.post("/notes", headers=headers)).status_code == 200

            loop = asyncio.get_running_loop()
            started = loop.time()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), SHUTDOWN_TIMEOUT * 10)
            elapsed = loop.time() - started
        output = log.read_text(errors="replace")
        print(output)
        # Bounded by the deadline, with room for the interpreter's exit on a loaded machine.
        assert elapsed < SHUTDOWN_TIMEOUT * 2
        # uvicorn re-raises the signal it handled once it has shut down.
        assert process.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in output
        # Writing the audit records met the stall; so did closing the idle connections on
        # PostgreSQL, where asyncpg waits for the server to acknowledge (aiomysql does not).
        assert "audit records not written within the flush timeout" in output
        if url.startswith("postgresql"):
            assert "closing the central engine abandoned" in output
        spilled = [record for sink, record in map(decode_line, SpillFile(spill).read())]
        assert len({r.record_id for r in spilled if r.action == "request:POST"}) == WRITES

        await proxy.restore()
    # The next start writes the spilled records, once.
    async with Tenancy(config):
        await eventually(lambda: _at_least(url, 1 + WRITES))
    async with Tenancy(config):
        pass
    assert await request_rows(url) == 1 + WRITES


async def _at_least(url: str, count: int) -> bool:
    return await request_rows(url) >= count


class StuckStore(MemoryTenantStore):
    """A store whose close never returns, like one waiting on a stalled network."""

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_close_ends_at_shutdown_timeout_and_logs_the_steps_it_gave_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        shutdown_timeout=0.5,
        audit_flush_timeout=0.1,
    )
    tenancy = Tenancy(config, store=StuckStore())
    await tenancy.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await tenancy.close()
    assert loop.time() - started < 0.5 * 10  # the deadline, with room for a loaded machine
    assert "closing the tenant store abandoned" in caplog.text
    # The stuck step used up the deadline: the steps after it are skipped, each logged.
    assert "closing the central engine skipped" in caplog.text
    assert not tenancy.started

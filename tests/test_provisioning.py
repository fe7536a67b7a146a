"""What `create_tenant` sends to provision a tenant, and what a crash part-way leaves behind.

Counted on the client (SQLAlchemy's statements, and asyncpg's own messages through its query
logger), so a change that adds a round trip or a commit fails here, whatever the machine's speed.

Under schema isolation on PostgreSQL the tenant's record (inserted ``active``) and its schema
and tables are one script, one round trip and one commit: a crash leaves both or neither. Where
the storage cannot share the record's transaction (MariaDB/MySQL commit each DDL statement on
their own), the record is stored ``provisioning`` first; a crash then leaves it so, and the
provisioning worker finishes it once it is stale.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, Pool

from fastapi_tenancy import Tenancy, TenancyConfig, TenantStatus
from fastapi_tenancy.exceptions import TenantAlreadyExists
from fastapi_tenancy.observe.events import TenantChanged
from fastapi_tenancy.pgwire import POSTGRES_SESSION_RESET
from fastapi_tenancy.worker import ProvisioningWorker
from tests.support.backends import isolation_config
from tests.support.models import Item
from tests.support.polling import eventually
from tests.support.provisioning import METADATA, METADATA_SPEC
from tests.support.services import TEST_STORAGE_PREFIX

ROOT = Path(__file__).resolve().parents[1]
on_postgres = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@contextmanager
def messages_to_postgres(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every message ``engine``'s connections send while the block runs, in order.

    A script sent through `fastapi_tenancy.isolation.templates.run_script` is announced to
    SQLAlchemy's listeners and logged by asyncpg: it is recorded once.
    """
    sent: list[str] = []
    loggers: dict[Any, Any] = {}

    def logged(record: Any) -> None:
        if sent and sent[-1] == record.query:
            return
        sent.append(record.query)

    def checkout(dbapi_connection: Any, *_: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver not in loggers:
            loggers[driver] = logged
            driver.add_query_logger(logged)

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        sent.append(sql)

    event.listen(engine.sync_engine, "checkout", checkout, insert=True)
    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "checkout", checkout)
        event.remove(engine.sync_engine, "before_cursor_execute", statement)
        for driver in loggers:
            driver.remove_query_logger(logged)


def commits(messages: list[str]) -> int:
    """Transactions that commit: a ``COMMIT``, or a script outside ``BEGIN`` (implicit)."""
    count, open_ = 0, False
    for message in messages:
        if message.startswith("BEGIN"):
            open_ = True
        elif message.startswith(("COMMIT", "ROLLBACK")):
            count += message.startswith("COMMIT")
            open_ = False
        elif not open_ and not message.startswith(POSTGRES_SESSION_RESET):
            count += 1
    return count


@on_postgres
async def test_a_schema_tenant_on_postgres_is_one_message_and_one_commit(
    database_url: str,
) -> None:
    events: list[tuple[str, TenantStatus]] = []
    async with Tenancy(isolation_config(("schema", database_url))) as tenancy:
        tenancy.hooks.subscribe(TenantChanged, lambda e: events.append((e.action, e.tenant.status)))
        await tenancy.create_tenant("warmup")  # the template is rendered once per process
        events.clear()
        with messages_to_postgres(tenancy.engine) as sent:
            acme = await tenancy.create_tenant("acme")
            await asyncio.sleep(0.05)  # asyncpg hands query-log records to the loop (call_soon)
        assert acme.status is TenantStatus.ACTIVE
        assert (
            [m.split(" ", 3)[:3] for m in sent]
            == [
                ["INSERT", "INTO", "tenancy_tenants"],  # then the tenant's DDL, in the same message
                POSTGRES_SESSION_RESET.split(" ", 3)[:3],
            ]
        ), sent
        assert f'CREATE SCHEMA "{acme.storage_name}"' in sent[0]
        assert commits(sent) == 1
        # The events of the three steps, in order, each with the record as it was then.
        assert events == [
            ("create", TenantStatus.PENDING),
            ("start_provisioning", TenantStatus.PROVISIONING),
            ("provision", TenantStatus.ACTIVE),
        ]
        assert await tenancy.get_tenant("acme") == acme
        async with tenancy.session("acme") as session:
            session.add(Item(name="first"))
            await session.commit()
            assert (await session.scalars(select(Item.name))).all() == ["first"]


@on_postgres
async def test_a_database_tenant_on_postgres_is_copied_over_one_new_connection(
    database_url: str,
) -> None:
    # The copy of the template needs a connection to the server of its own (CREATE DATABASE
    # runs outside any transaction); a new tenant's database is not looked for first.
    opened: list[object] = []

    def connected(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    async with Tenancy(isolation_config(("database", database_url))) as tenancy:
        await tenancy.create_tenant("warmup")  # builds the template, fills the store's pool
        event.listen(Pool, "connect", connected)
        try:
            acme = await tenancy.create_tenant("acme")
        finally:
            event.remove(Pool, "connect", connected)
        assert acme.status is TenantStatus.ACTIVE
        assert len(opened) == 1
        async with tenancy.session("acme") as session:
            session.add(Item(name="first"))
            await session.commit()


@pytest.mark.mysql
@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_a_schema_tenant_on_mariadb_is_its_ddl_and_three_record_statements(
    database_url: str,
) -> None:
    # Step by step: the record (inserted provisioning), a look for the database, the database,
    # its tables and their indexes, the record made active. Tables are not looked for in a
    # database this call has just created. Four transactions, each committed.
    statements: list[str] = []
    commits: list[object] = []
    async with Tenancy(isolation_config(("schema", database_url))) as tenancy:
        await tenancy.create_tenant("warmup")  # the shared table is created once
        engine = tenancy.engine.sync_engine
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        event.listen(engine, "commit", commits.append)
        acme = await tenancy.create_tenant("acme")
    kinds = [" ".join(s.split()[:2]).upper() for s in statements]
    assert kinds == [
        "INSERT INTO",
        "SELECT SCHEMA_COMMENT",
        "CREATE DATABASE",
        "CREATE TABLE",  # items
        "CREATE INDEX",  # on its tenant_id
        "CREATE TABLE",  # notes
        "CREATE INDEX",
        "UPDATE TENANCY_TENANTS",
    ], statements
    assert len(commits) == 4
    assert acme.status is TenantStatus.ACTIVE


@on_postgres
async def test_a_taken_identifier_is_refused_and_leaves_no_schema(database_url: str) -> None:
    async with Tenancy(isolation_config(("schema", database_url))) as tenancy:
        first = await tenancy.create_tenant("acme")
        with pytest.raises(TenantAlreadyExists):
            await tenancy.create_tenant("acme")
        assert await tenant_schemas(tenancy.engine) == [first.storage_name]
        assert await tenancy.get_tenant("acme") == first


async def tenant_schemas(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :p) ORDER BY 1"),
            {"p": TEST_STORAGE_PREFIX},
        )
        return [str(name) for (name,) in rows]


@asynccontextmanager
async def creator(settings: dict[str, Any], identifier: str, stage: str) -> AsyncIterator[Any]:
    """The process of `tests.support.provisioning`, killed (``SIGKILL``) when the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.provisioning",
        json.dumps(settings),
        identifier,
        stage,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()


@on_postgres
async def test_a_create_killed_mid_transaction_leaves_neither_record_nor_schema(
    database_url: str,
) -> None:
    settings: dict[str, Any] = {
        "database_url": database_url,
        "isolation_strategy": "schema",
        "tenant_metadata": METADATA_SPEC,
        "schema_prefix": TEST_STORAGE_PREFIX,
    }
    config = TenancyConfig(**settings)
    admin = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with Tenancy(config) as tenancy:
            first = await tenancy.create_tenant("first")  # the shared table exists from here
            async with admin.connect() as locker, admin.connect() as watcher:
                # Creating acme's foreign key to the shared table waits for this lock: acme's
                # record and schema are written by then, in a transaction still open.
                await locker.execute(text("LOCK TABLE crash_plans IN ACCESS EXCLUSIVE MODE"))
                async with creator(settings, "acme", "transaction") as process:
                    waiting: list[int] = []

                    async def stuck() -> bool:
                        rows = await watcher.execute(
                            text(
                                "SELECT pid FROM pg_stat_activity WHERE datname = "
                                "current_database() AND wait_event_type = 'Lock' AND "
                                "starts_with(query, 'INSERT INTO tenancy_tenants')"
                            )
                        )
                        waiting[:] = [int(pid) for (pid,) in rows]
                        await watcher.commit()
                        return bool(waiting)

                    await eventually(stuck, what="the create to wait for the lock")
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    # The process is gone; its server session ends as a lost connection would.
                    for pid in waiting:
                        await watcher.execute(text(f"SELECT pg_terminate_backend({pid})"))
                    await watcher.commit()
                await locker.rollback()
            assert await tenancy.get_tenant("acme") is None
            assert await tenant_schemas(tenancy.engine) == [first.storage_name]
            # Nothing stands in the way of creating it again.
            acme = await tenancy.create_tenant("acme")
            assert acme.status is TenantStatus.ACTIVE
    finally:
        await admin.dispose()


@pytest.mark.mysql
@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_a_create_killed_before_its_tables_is_finished_by_the_worker(
    database_url: str,
) -> None:
    settings: dict[str, Any] = {
        "database_url": database_url,
        "isolation_strategy": "schema",
        "tenant_metadata": METADATA_SPEC,
        "schema_prefix": TEST_STORAGE_PREFIX,
    }
    async with Tenancy(TenancyConfig(**settings)) as tenancy:
        await tenancy.create_tenant("first")
        async with creator(settings, "acme", "tables") as process:
            assert process.stdout is not None
            assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
        # Killed with its record stored and its database made, before any table.
        left = await tenancy.get_tenant("acme")
        assert left is not None
        assert left.status is TenantStatus.PROVISIONING
        assert await tables_in(tenancy.engine, left.storage_name) == []
        result = await ProvisioningWorker(tenancy, stale_after=0.001).run_once()
        assert result.provisioned == 1
        acme = await tenancy.get_tenant("acme")
        assert acme is not None
        assert acme.status is TenantStatus.ACTIVE
        assert await tables_in(tenancy.engine, acme.storage_name) == ["crash_orders"]
        orders = METADATA.tables["crash_orders"]
        async with tenancy.session("acme") as session:
            assert await session.scalar(select(func.count()).select_from(orders)) == 0


async def tables_in(engine: AsyncEngine, database: str | None) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": database},
        )
        return sorted(str(name) for (name,) in rows)


@on_postgres
async def test_any_name_and_metadata_survive_the_one_message_insert(database_url: str) -> None:
    # The record travels as literals in the script's text: quotes, backslashes, a would-be
    # statement end and non-ASCII text must come back exactly as given.
    name = "O'Brien \\' ); DROP TABLE tenancy_tenants; -- \\\\ ünïcødé $$ E'x'"
    metadata = {"plan": "pro'\\", "nested": {"list": [1, 2.5, None, True, 'a"b']}, "é": ""}
    async with Tenancy(isolation_config(("schema", database_url))) as tenancy:
        await tenancy.create_tenant("warmup")  # the shared tables are created once
        with messages_to_postgres(tenancy.engine) as sent:
            created = await tenancy.create_tenant("acme", name=name, metadata=metadata)
            await asyncio.sleep(0.05)
        assert len(sent) == 2, sent  # in the one message, not step by step
        stored = await tenancy.get_tenant("acme")
        assert stored == created
        assert stored is not None
        assert (stored.name, stored.metadata) == (name, metadata)
        assert stored.status is TenantStatus.ACTIVE

"""The existing-app example converts as docs/adopting.md says, on every backend.

The single-tenant app (its own engine, Alembic history and data) serves its seeded customers;
then, with the documented commands: ``alembic upgrade 0002`` adds ``tenant_id``, ``fastapi-tenancy
tenants adopt acme`` gives the existing rows to the first tenant, ``alembic upgrade head``
enforces NOT NULL. The converted app serves two tenants with ``plans`` shared, through the app's
own pool: the server's connections to the database (PostgreSQL's ``pg_stat_activity``, MariaDB's
process list) are exactly the connections of that pool.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from examples.existing_app import app as converted
from examples.existing_app import legacy
from examples.existing_app.db import POOL_SIZE
from examples.existing_app.seed import CUSTOMERS, INVOICES_EACH, seed
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from fastapi_tenancy.cli import main
from fastapi_tenancy.testing import run_app
from tests.support.backends import DATABASES
from tests.support.polling import eventually

ALEMBIC_INI = Path(converted.__file__).with_name("alembic.ini")
TENANT_SETTINGS = {
    "TENANCY_TENANT_METADATA": "examples.existing_app.models:Base.metadata",
    # The app's Alembic history owns the tables: creating a tenant makes none.
    "TENANCY_TENANT_TABLES": "none",
}
SEEDED = [{"name": name, "plan": plan} for name, plan in CUSTOMERS.items()]


async def alembic_upgrade(revision: str) -> None:
    # env.py runs its own event loop, as under the `alembic` command.
    await asyncio.to_thread(command.upgrade, Config(str(ALEMBIC_INI)), revision)


async def cli(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
async def test_the_single_tenant_app_converts_and_serves_two_tenants_from_its_own_pool(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)

    # Before: the app as it runs today.
    await alembic_upgrade("0001")
    await seed()
    before = legacy.create_app()
    async with (
        before.router.lifespan_context(before),
        httpx.AsyncClient(transport=httpx.ASGITransport(before), base_url="http://app") as client,
    ):
        assert (await client.get("/customers")).json() == SEEDED

    # Step 1: the nullable column.
    await alembic_upgrade("0002")
    # Step 2: the existing rows to the first tenant.
    monkeypatch.setenv("TENANCY_DATABASE_URL", database_url)
    for name, value in TENANT_SETTINGS.items():
        monkeypatch.setenv(name, value)
    assert await cli("tenants", "adopt", "acme", "--name", "Acme") == 0
    rows = len(CUSTOMERS) * (1 + INVOICES_EACH)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"adopted {rows} row(s) in 2 table(s) into tenant acme"
    )
    # Step 3: NOT NULL.
    await alembic_upgrade("head")
    assert await cli("tenants", "create", "globex") == 0
    capsys.readouterr()

    app = converted.create_app()
    async with run_app(app) as harness:
        async with harness.client("acme") as acme, harness.client("globex") as globex:
            assert (await acme.get("/customers")).json() == SEEDED
            assert (await globex.get("/customers")).json() == []
            # The shared plans: read by both, joined from either tenant's rows.
            assert (await acme.get("/plans")).json() == (await globex.get("/plans")).json()
            created = await globex.post("/customers", json={"name": "Hedy", "plan": "free"})
            assert created.status_code == 201, created.text
            assert (await globex.get("/customers")).json() == [{"name": "Hedy", "plan": "free"}]
            assert (await acme.get("/customers")).json() == SEEDED
            assert (await acme.get("/invoices/total")).json()["count"] == rows - len(CUSTOMERS)
            assert (await globex.get("/invoices/total")).json() == {"count": 0, "cents": 0}

            # Both tenants at once, more requests than the pool has connections.
            answers = await asyncio.gather(
                *(
                    client.get("/customers")
                    for client in (acme, globex)
                    for _ in range(4 * POOL_SIZE)
                )
            )
            assert {response.status_code for response in answers} == {200}

        # One pool: the runtime serves through the app's engine and opened none of its own.
        engine = app.state.engine
        assert harness.tenancy.engine is engine
        if make_url(database_url).get_backend_name() != "sqlite":
            pool = engine.pool
            assert isinstance(pool, QueuePool)
            await eventually(
                lambda: _server_connections_are(database_url, pool.checkedin() + pool.checkedout()),
                what="server connections == the app pool's connections",
            )
            assert 0 < pool.checkedin() + pool.checkedout() <= POOL_SIZE
    # The library leaves the app's engine open; the app's own lifespan disposed it.


async def _server_connections_are(database_url: str, expected: int) -> bool:
    """Whether the server has exactly ``expected`` connections to the database, besides this
    check's own."""
    probe = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with probe.connect() as conn:
            if conn.dialect.name == "postgresql":
                sessions, mine = (
                    "pg_stat_activity",
                    "datname = current_database() AND pid <> pg_backend_pid()",
                )
            else:
                sessions, mine = (
                    "information_schema.processlist",
                    "db = DATABASE() AND id <> CONNECTION_ID()",
                )
            count = await conn.scalar(
                select(func.count()).select_from(text(sessions)).where(text(mine))
            )
    finally:
        await probe.dispose()
    return count == expected

"""Schema and database isolation through PgBouncer in transaction pooling mode.

PgBouncer hands every transaction to whichever of its few server connections is free, so nothing
may live on a connection between transactions: not the tenant binding, not a prepared statement.
Concurrent mixed-tenant HTTP traffic runs through it with ``database_pgbouncer=True``; the same
traffic without that setting is the control that shows the setting is what makes it work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from asgi_lifespan import LifespanManager
from asyncpg.exceptions import DuplicatePreparedStatementError, InvalidSQLStatementNameError
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig
from tests.support import apps
from tests.support.backends import TEST_STORAGE_PREFIX
from tests.support.models import Base
from tests.support.pgbouncer import PgBouncer, running_pgbouncer, server_connection_sampler
from tests.support.services import POSTGRES_URL, require_server, reset_database
from tests.support.traffic import assert_each_tenant_owns_exactly, mixed_traffic

pytestmark = pytest.mark.postgres

TENANTS = [f"tenant-{n}" for n in range(6)]
REQUESTS = 200
CONCURRENCY = 30
# What asyncpg raises when PgBouncer runs a statement on a server connection other than the one
# it was prepared on: "prepared statement ... does not exist" or "... already exists".
PREPARED_STATEMENT_ERRORS = (InvalidSQLStatementNameError, DuplicatePreparedStatementError)


@pytest.fixture
async def direct_url() -> AsyncIterator[str]:
    """The central database, reset before and after over a direct connection."""
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    yield POSTGRES_URL
    await reset_database(POSTGRES_URL)


@pytest.fixture
def pgbouncer(direct_url: str) -> Iterator[PgBouncer]:
    with running_pgbouncer(direct_url) as bouncer:
        yield bouncer


def schema_config(bouncer: PgBouncer, *, pgbouncer_aware: bool) -> TenancyConfig:
    return TenancyConfig(
        database_url=bouncer.url,
        database_pgbouncer=pgbouncer_aware,
        isolation_strategy="schema",
        tenant_metadata=Base.metadata,
        schema_prefix=TEST_STORAGE_PREFIX,
    )


def caused_by_prepared_statement(error: BaseException) -> bool:
    """Whether an asyncpg prepared-statement error is behind ``error`` (SQLAlchemy wraps it)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, PREPARED_STATEMENT_ERRORS):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def test_schema_isolation_holds_through_pgbouncer_in_transaction_mode(
    pgbouncer: PgBouncer,
) -> None:
    app = apps.create_app(schema_config(pgbouncer, pgbouncer_aware=True))
    async with server_connection_sampler(pgbouncer.server_url, pgbouncer.database) as server:
        async with LifespanManager(app):
            tenancy: Tenancy = app.state.tenancy
            client_connections = Counter[str]()
            event.listen(
                tenancy.engine.sync_engine,
                "connect",
                lambda *_: client_connections.update(["opened"]),
            )
            ids = {
                identifier: (await tenancy.create_tenant(identifier)).id for identifier in TENANTS
            }

            writes, failures = await mixed_traffic(
                app, ids, requests=REQUESTS, concurrency=CONCURRENCY
            )

            assert [repr(failure) for failure in failures] == []
            await assert_each_tenant_owns_exactly(tenancy, ids, writes)
    # The app opened many client connections; the server only ever saw PgBouncer's small pool.
    assert client_connections["opened"] > pgbouncer.pool_size
    assert 0 < server.peak <= pgbouncer.pool_size, server.samples


async def test_without_the_pgbouncer_setting_prepared_statements_break(
    pgbouncer: PgBouncer,
) -> None:
    # Tenants are provisioned with the setting on, so only the request traffic runs without it.
    async with Tenancy(schema_config(pgbouncer, pgbouncer_aware=True)) as tenancy:
        ids = {identifier: (await tenancy.create_tenant(identifier)).id for identifier in TENANTS}
    app = apps.create_app(schema_config(pgbouncer, pgbouncer_aware=False))
    async with LifespanManager(app):
        _, failures = await mixed_traffic(app, ids, requests=REQUESTS, concurrency=CONCURRENCY)

    # asyncpg prepares a statement once per client connection and reuses it in later
    # transactions; PgBouncer runs those on whichever server connection is free, where the
    # statement was never prepared.
    unexplained = [
        repr(failure) for failure in failures if not caused_by_prepared_statement(failure)
    ]
    assert failures, "the traffic succeeded without database_pgbouncer"
    assert unexplained == []


# Named like the tenant databases the resets of ``direct_url`` discard: before the test (left by
# an interrupted run) and after it, without a DROP DATABASE (a checkpoint each) here.
FLEET = [f"{TEST_STORAGE_PREFIX}pgb_{n}" for n in range(4)]
FLEET_PATTERN = TEST_STORAGE_PREFIX.replace("_", "\\_") + "pgb\\_%"


@pytest.fixture
async def fleet_databases(direct_url: str) -> list[str]:
    """Tenant databases made directly on the server (``direct_url`` discards them)."""
    admin = create_async_engine(
        make_url(direct_url).set(database="postgres"),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )
    try:
        async with admin.connect() as conn:
            for name in FLEET:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return FLEET


async def test_database_isolation_holds_through_pgbouncer_in_transaction_mode(
    direct_url: str, fleet_databases: list[str]
) -> None:
    # A budget below the tenants' share: tenant connections to PgBouncer are opened and closed
    # all the time, while PgBouncer keeps its few server connections per database.
    with running_pgbouncer(direct_url, every_database=True) as bouncer:
        config = TenancyConfig(
            database_url=direct_url,
            database_pgbouncer=True,
            isolation_strategy="database",
            tenant_metadata=Base.metadata,
            database_connection_budget=3,
        )
        app = apps.create_app(config)
        async with server_connection_sampler(direct_url, FLEET_PATTERN) as server:
            async with LifespanManager(app):
                tenancy: Tenancy = app.state.tenancy
                ids = {}
                for n, database in enumerate(fleet_databases):
                    url = make_url(bouncer.url).set(database=database)
                    tenant = await tenancy.create_tenant(
                        f"tenant-{n}", database_url=url.render_as_string(hide_password=False)
                    )
                    ids[tenant.identifier] = tenant.id

                writes, failures = await mixed_traffic(
                    app, ids, requests=REQUESTS, concurrency=CONCURRENCY
                )

                assert [repr(failure) for failure in failures] == []
                await assert_each_tenant_owns_exactly(tenancy, ids, writes)
                budget = tenancy.isolation.engines.budget  # type: ignore[attr-defined]
                assert budget.peak <= 3
                assert budget.trims > 0  # tenants took turns within the budget
    # The server saw at most PgBouncer's pool for each tenant database.
    assert 0 < server.peak <= bouncer.pool_size * len(fleet_databases), server.samples

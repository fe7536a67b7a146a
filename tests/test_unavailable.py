"""Tenant sessions: unreachable storage becomes `ServiceUnavailable`; every other error stays.

The fault tests (tests/faults/) break real servers; these pin down the classification itself on
the embedded SQLite database: a statement error (a missing table) or an app's own ``OSError`` is
never mistaken for an outage, while a pool that hands out no connection or a locked database is
one; and the classifier's table of driver error codes, on the drivers' own exception classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_tenancy import ServiceUnavailable, Tenancy, TenancyConfig
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.store import SQLAlchemyTenantStore
from tests.support.models import Base


@pytest.fixture
async def tenancy(tmp_path: Path) -> AsyncIterator[Tenancy]:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unavailable.db'}",
        tenant_metadata=Base.metadata,
        database_pool_size=1,
        database_max_overflow=0,
        database_pool_timeout=0.2,
    )
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        yield tenancy


async def run_in_session(tenancy: Tenancy, statement: str, app_error: Exception | None) -> None:
    """Execute ``statement`` in a tenant session, then raise ``app_error`` as app code would."""
    async with tenancy.session("acme") as session:
        await session.execute(text(statement))
        if app_error is not None:
            raise app_error


async def test_a_failed_statement_passes_through_unchanged(tenancy: Tenancy) -> None:
    with pytest.raises(OperationalError) as failure:
        await run_in_session(tenancy, "SELECT * FROM no_such_table", None)
    assert not is_unavailable(failure.value)


async def test_the_apps_own_os_error_passes_through_unchanged(tenancy: Tenancy) -> None:
    # e.g. the handler reads a file that is missing: the app's error, not an outage
    with pytest.raises(FileNotFoundError):
        await run_in_session(tenancy, "SELECT 1", FileNotFoundError("/missing/report.csv"))


async def test_a_pool_with_no_free_connection_is_service_unavailable(tenancy: Tenancy) -> None:
    async with tenancy.session("acme") as holder:
        await holder.execute(text("SELECT 1"))
        with pytest.raises(ServiceUnavailable, match=r"tenant 'acme'.*TimeoutError") as failure:
            await run_in_session(tenancy, "SELECT 1", None)
    cause = failure.value.__cause__
    assert cause is not None
    assert is_unavailable(cause)


async def test_a_missing_tenants_table_is_the_stores_error_not_an_outage(tmp_path: Path) -> None:
    engine = central_engine(TenancyConfig(database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"))
    try:
        store = SQLAlchemyTenantStore(engine)  # never initialised: no tenants table
        with pytest.raises(OperationalError, match="no such table") as failure:
            await store.get_by_identifier("acme")
    finally:
        await engine.dispose()
    assert not is_unavailable(failure.value)


async def test_a_locked_database_is_service_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    # No busy wait: a locked database answers at once instead of after SQLite's 5 s default.
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
    store = SQLAlchemyTenantStore(engine)
    await store.initialize()
    locker = await aiosqlite.connect(path)
    try:
        await locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ServiceUnavailable, match="SQLITE_BUSY") as failure:
            await store.get_by_identifier("acme")
    finally:
        await locker.close()
        await engine.dispose()
    assert isinstance(failure.value.__cause__, OperationalError)
    assert "database is locked" in str(failure.value.__cause__)


def driver_errors() -> list[Any]:
    """Driver exceptions as the drivers raise them, and whether each means "unavailable"."""
    from aiomysql import OperationalError as MyOperational
    from aiomysql import ProgrammingError as MyProgramming
    from asyncpg import exceptions as pg

    return [
        pytest.param(pg.TooManyConnectionsError("too many clients"), True, id="pg-53300"),
        pytest.param(pg.CannotConnectNowError("starting up"), True, id="pg-57P03"),
        pytest.param(pg.AdminShutdownError("terminating connection"), True, id="pg-57P01"),
        pytest.param(pg.CrashShutdownError("crash"), True, id="pg-57P02"),
        pytest.param(pg.ConnectionFailureError("connection failure"), True, id="pg-08006"),
        pytest.param(pg.DiskFullError("disk full"), True, id="pg-53100"),
        pytest.param(pg.UndefinedTableError("no relation"), False, id="pg-42P01"),
        pytest.param(pg.PostgresSyntaxError("syntax"), False, id="pg-42601"),
        pytest.param(pg.InvalidPasswordError("password"), False, id="pg-28P01"),
        pytest.param(pg.QueryCanceledError("statement timeout"), False, id="pg-57014"),
        pytest.param(pg.DeadlockDetectedError("deadlock"), False, id="pg-40P01"),
        # Unavailable only while connecting (the database was dropped), not in a statement.
        pytest.param(pg.InvalidCatalogNameError("no database"), False, id="pg-3D000"),
        pytest.param(MyOperational(1040, "Too many connections"), True, id="my-1040"),
        pytest.param(MyOperational(1203, "max_user_connections"), True, id="my-1203"),
        pytest.param(MyOperational(2006, "server has gone away"), True, id="my-2006"),
        pytest.param(MyOperational(2013, "Lost connection"), True, id="my-2013"),
        pytest.param(MyProgramming(1146, "doesn't exist"), False, id="my-1146"),
        pytest.param(MyOperational(1045, "Access denied"), False, id="my-1045"),
        pytest.param(MyOperational(1049, "Unknown database"), False, id="my-1049"),
    ]


@pytest.mark.parametrize(("error", "unavailable"), driver_errors())
def test_driver_errors_are_classified_by_their_code(error: Exception, unavailable: bool) -> None:
    wrapped = DBAPIError("SELECT 1", None, error)
    assert is_unavailable(wrapped) is unavailable
    assert is_unavailable(error) is unavailable

"""Taking a single-tenant database into row isolation on every backend: the Alembic steps
(`fastapi_tenancy.migrations.ops`) run by real Alembic operations, ``tenants adopt`` in process
through ``main``, and the doctor's report of rows without a tenant."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig, tenant_id_type
from fastapi_tenancy.adoption import AdoptionRefused, adopt_rows, unowned_rows
from fastapi_tenancy.cli import main
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.migrations.errors import MigrationError
from fastapi_tenancy.migrations.ops import (
    add_tenant_column,
    drop_tenant_column,
    enforce_tenant_column,
    relax_tenant_column,
)
from tests.support.backends import all_databases, database_url_template
from tests.support.hypothesis_profiles import ROW_PROPERTY

# The app before tenancy: customers, their invoices, and a global table of plans.
LEGACY = MetaData()
customers = Table(
    "customers",
    LEGACY,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(50), nullable=False),
)
invoices = Table(
    "invoices",
    LEGACY,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, ForeignKey("customers.id"), nullable=False),
    Column("cents", Integer, nullable=False),
)
plans = Table("plans", LEGACY, Column("id", Integer, primary_key=True), Column("name", String(20)))
SCOPED = ("customers", "invoices")

# The same tables after conversion, as the app's models then declare them (TENANCY_TENANT_METADATA).
CONVERTED = MetaData()
for _table in LEGACY.sorted_tables:
    _copy = _table.to_metadata(CONVERTED)
    if _table.name in SCOPED:
        _copy.append_column(Column("tenant_id", tenant_id_type(), index=True, nullable=False))
CONVERTED_SPEC = "tests.cli.test_adopt:CONVERTED"


def run_ops(step: Callable[[Operations], None]) -> Callable[[Connection], None]:
    """``step`` as a migration's ``upgrade()`` would run it: real Alembic operations."""

    def run(conn: Connection) -> None:
        step(Operations(MigrationContext.configure(conn)))

    return run


def add_columns(op: Operations) -> None:
    for name in SCOPED:
        add_tenant_column(op, name)


def enforce_columns(op: Operations) -> None:
    for name in SCOPED:
        enforce_tenant_column(op, name)


@pytest.fixture
async def legacy(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The legacy tables with the nullable column added (Alembic revision 1), no rows."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.run_sync(LEGACY.create_all)
    async with engine.begin() as conn:
        await conn.run_sync(run_ops(add_columns))
    yield engine
    await engine.dispose()


async def seed(engine: AsyncEngine, customer_count: int, invoices_each: int = 2) -> None:
    async with engine.begin() as conn:
        if customer_count:
            await conn.execute(
                insert(customers),
                [{"id": i, "name": f"c{i}"} for i in range(customer_count)],
            )
            await conn.execute(
                insert(invoices),
                [
                    {"id": i * invoices_each + j, "customer_id": i, "cents": j}
                    for i in range(customer_count)
                    for j in range(invoices_each)
                ],
            )
        await conn.execute(insert(plans), [{"id": 1, "name": "free"}])


async def owners(engine: AsyncEngine, table: Table) -> dict[str | None, int]:
    async with engine.connect() as conn:
        column = table.c.tenant_id
        rows = await conn.execute(select(column, func.count()).select_from(table).group_by(column))
        return {owner: count for owner, count in rows.all()}


def reflected(table: Table) -> Table:
    return Table(table.name, MetaData(), Column("id", Integer), Column("tenant_id", String(64)))


def use_database(monkeypatch: pytest.MonkeyPatch, url: str, **settings: str) -> None:
    monkeypatch.setenv("TENANCY_DATABASE_URL", url)
    monkeypatch.setenv("TENANCY_TENANT_METADATA", CONVERTED_SPEC)
    for name, value in settings.items():
        monkeypatch.setenv(f"TENANCY_{name.upper()}", value)


def adopt(*args: str) -> int:
    return main(["tenants", "adopt", *args])


def tenant_id(capsys: pytest.CaptureFixture[str], identifier: str) -> str:
    assert main(["tenants", "show", identifier, "--json"]) == 0
    value: str = json.loads(capsys.readouterr().out)["id"]
    return value


@all_databases
async def test_an_existing_database_converts_step_by_step(
    legacy: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(legacy, 3)
    use_database(monkeypatch, database_url)

    # `main` runs its own event loop: the commands run outside this test's.
    assert await _in_thread(adopt, "acme", "--batch-size", "2") == 0
    assert capsys.readouterr().out.splitlines() == [
        "created tenant acme (active)",
        "customers: 3 row(s) adopted",
        "invoices: 6 row(s) adopted",
        "adopted 9 row(s) in 2 table(s) into tenant acme",
    ]
    acme = await _in_thread(tenant_id, capsys, "acme")
    assert await owners(legacy, reflected(customers)) == {acme: 3}
    assert await owners(legacy, reflected(invoices)) == {acme: 6}

    # Again: nothing left to do, nothing changed.
    assert await _in_thread(adopt, "acme") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "adopted 0 row(s) in 2 table(s) into tenant acme"
    )

    # Revision 2: NOT NULL, with the index the model declares.
    async with legacy.begin() as conn:
        await conn.run_sync(run_ops(enforce_columns))

    def schema_facts(conn: Connection) -> dict[str, tuple[bool, list[str | None]]]:
        inspector = inspect(conn)
        return {
            name: (
                next(c for c in inspector.get_columns(name) if c["name"] == "tenant_id")[
                    "nullable"
                ],
                [
                    i["name"]
                    for i in inspector.get_indexes(name)
                    if i["column_names"] == ["tenant_id"]
                ],
            )
            for name in SCOPED
        }

    async with legacy.connect() as conn:
        assert await conn.run_sync(schema_facts) == {
            name: (False, [f"ix_{name}_tenant_id"]) for name in SCOPED
        }
        with pytest.raises(DBAPIError):
            await conn.execute(insert(reflected(customers)).values(id=99, tenant_id=None))

    # The converted tables serve the tenant through row isolation; plans stayed global.
    config = TenancyConfig(database_url=database_url, tenant_metadata=CONVERTED)
    async with Tenancy(config) as tenancy, tenancy.session("acme") as session:
        converted = CONVERTED.tables["customers"]
        assert (await session.scalars(select(converted.c.name).order_by(converted.c.id))).all() == [
            "c0",
            "c1",
            "c2",
        ]
    async with legacy.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(plans)) == 1


@all_databases
async def test_enforcing_refuses_while_rows_have_no_tenant_and_the_steps_go_back_down(
    legacy: AsyncEngine,
) -> None:
    await seed(legacy, 1)
    async with legacy.begin() as conn:
        with pytest.raises(MigrationError, match=r"customers has 1 row\(s\) without a tenant"):
            await conn.run_sync(run_ops(enforce_columns))

    async with legacy.begin() as conn:
        await conn.execute(update(reflected(customers)).values(tenant_id="t"))
        await conn.execute(update(reflected(invoices)).values(tenant_id="t"))
    async with legacy.begin() as conn:
        await conn.run_sync(run_ops(enforce_columns))

    def downgrade(op: Operations) -> None:
        for name in SCOPED:
            relax_tenant_column(op, name)
            drop_tenant_column(op, name)

    async with legacy.begin() as conn:
        await conn.run_sync(run_ops(downgrade))

    def columns(conn: Connection) -> dict[str, list[str]]:
        inspector = inspect(conn)
        return {name: [c["name"] for c in inspector.get_columns(name)] for name in SCOPED}

    async with legacy.connect() as conn:
        assert await conn.run_sync(columns) == {
            "customers": ["id", "name"],
            "invoices": ["id", "customer_id", "cents"],
        }


@pytest.fixture
async def tenancy(legacy: AsyncEngine, database_url: str) -> AsyncIterator[Tenancy]:
    config = TenancyConfig(database_url=database_url, tenant_metadata=CONVERTED)
    async with Tenancy(config) as runtime:
        yield runtime


@all_databases
@settings(ROW_PROPERTY, max_examples=6)
@given(
    customer_count=st.integers(0, 12),
    stamped=st.integers(0, 12),
    batch_size=st.integers(1, 8),
)
async def test_an_interrupted_adoption_resumes_and_adopts_each_row_once(
    legacy: AsyncEngine, tenancy: Tenancy, customer_count: int, stamped: int, batch_size: int
) -> None:
    # An earlier run stopped after `stamped` customers; this one finishes the job in batches.
    async with legacy.begin() as conn:
        await conn.execute(invoices.delete())
        await conn.execute(customers.delete())
        await conn.execute(plans.delete())
    await seed(legacy, customer_count, invoices_each=1)
    tenant = await tenancy.get_tenant("acme") or await tenancy.create_tenant("acme")
    async with legacy.begin() as conn:
        table = reflected(customers)
        await conn.execute(update(table).where(table.c.id < stamped).values(tenant_id=tenant.id))
    report = await adopt_rows(tenancy, "acme", batch_size=batch_size)
    done = {table.table: table.rows for table in report.tables}
    assert done == {
        "customers": max(customer_count - stamped, 0),
        "invoices": customer_count,
    }
    expected = {tenant.id: customer_count} if customer_count else {}
    assert await owners(legacy, reflected(customers)) == expected
    assert await owners(legacy, reflected(invoices)) == expected


@all_databases
async def test_rows_without_a_tenant_next_to_another_tenants_are_refused_untouched(
    legacy: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(legacy, 2)
    use_database(monkeypatch, database_url)
    assert await _in_thread(main, ["tenants", "create", "beta"]) == 0
    capsys.readouterr()
    beta = await _in_thread(tenant_id, capsys, "beta")
    async with legacy.begin() as conn:
        table = reflected(invoices)
        await conn.execute(update(table).where(table.c.id == 0).values(tenant_id=beta))
    before = await owners(legacy, reflected(invoices))

    assert await _in_thread(adopt, "acme") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "fastapi-tenancy: error: refusing to give rows without a tenant to 'acme': other "
        "tenants' rows share their tables, so whose they are is ambiguous: invoices (tenant "
        "'beta'); set their tenant_id by hand or name only unshared tables with --tables"
    ]
    assert await owners(legacy, reflected(invoices)) == before
    assert await owners(legacy, reflected(customers)) == {None: 2}

    # The unshared table alone is fine.
    assert await _in_thread(adopt, "acme", "--tables", "customers") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "adopted 2 row(s) in 1 table(s) into tenant acme"
    )


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (
            ["--tables", "plans"],
            {},
            "no table named plans has a tenant_id column; add it with "
            "fastapi_tenancy.migrations.ops.add_tenant_column in a migration first",
        ),
        (
            [],
            {"isolation_strategy": "database"},
            "tenants adopt gives existing rows to a tenant under row isolation; "
            "TENANCY_ISOLATION_STRATEGY is 'database'",
        ),
    ],
    ids=["unscoped-table", "not-row-isolation"],
)
@all_databases
async def test_adoption_outside_its_use_fails_in_one_line_before_creating_a_tenant(
    legacy: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    settings: dict[str, str],
    message: str,
) -> None:
    await seed(legacy, 1)
    if settings:
        settings = settings | {"database_url_template": database_url_template(database_url)}
    use_database(monkeypatch, database_url, **settings)
    assert await _in_thread(adopt, "acme", *args) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert message in err[0]
    config = TenancyConfig(database_url=database_url, tenant_metadata=CONVERTED)
    async with Tenancy(config) as tenancy:
        assert await tenancy.get_tenant("acme") is None


async def test_a_deleted_tenant_gets_no_rows(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as conn:
        await conn.run_sync(LEGACY.create_all)
        await conn.run_sync(run_ops(add_columns))
    await seed(engine, 1)
    config = TenancyConfig(database_url=url, tenant_metadata=CONVERTED)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("acme")
        await tenancy.delete_tenant("acme")
        with pytest.raises(AdoptionRefused, match="tenant 'acme' is deleted"):
            await adopt_rows(tenancy, "acme")
    assert await owners(engine, reflected(customers)) == {None: 1}
    await engine.dispose()


@all_databases
async def test_doctor_fails_while_rows_have_no_tenant(
    legacy: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(legacy, 2)
    assert [
        (row.table, row.rows, row.nullable)
        for row in await unowned_rows(legacy, TenantTables(CONVERTED))
    ] == [("invoices", 4, True), ("customers", 2, True)]

    use_database(monkeypatch, database_url)
    assert await _in_thread(main, ["doctor", "--json"]) == 1
    check = _check(capsys, "adopted")
    assert check["status"] == "fail"
    assert check["message"] == ("rows no tenant sees (tenant_id is NULL): invoices 4, customers 2")
    assert await _in_thread(adopt, "acme") == 0
    capsys.readouterr()
    await _in_thread(main, ["doctor", "--json"])
    check = _check(capsys, "adopted")
    assert check["status"] == "warn"
    assert check["message"] == "tenant_id accepts NULL in invoices, customers"

    async with legacy.begin() as conn:
        await conn.run_sync(run_ops(enforce_columns))
    await _in_thread(main, ["doctor", "--json"])
    assert _check(capsys, "adopted")["status"] == "ok"


def _check(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, Any]:
    checks = json.loads(capsys.readouterr().out)["checks"]
    found: dict[str, Any] = next(check for check in checks if check["name"] == name)
    return found


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(function, *args)

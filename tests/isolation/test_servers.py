"""A pool of database servers: placement, routing, per-server migrations and what the CLI shows.

The servers are the suite's PostgreSQL and a second PostgreSQL cluster of the session's own
(`tests.support.pg_cluster`), so a tenant placed on the second one really lives elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import MetaData, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.cli import main
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.placement import DatabaseServer, ServerFull, ServerPool
from fastapi_tenancy.migrations import upgrade
from fastapi_tenancy.store.memory import MemoryTenantStore
from tests.support.backends import TEST_STORAGE_PREFIX, database_url_template
from tests.support.migration_scripts import SECOND, alembic_config
from tests.support.models import Base, Item
from tests.support.pg_cluster import PostgresCluster
from tests.support.services import MYSQL_URL, POSTGRES_URL, require_server, reset_database

# -- the placement policy, on its own ------------------------------------------------------------


def pool_of(*capacities: int) -> ServerPool:
    return ServerPool(
        DatabaseServer(name=f"s{i}", url=f"postgresql+asyncpg://h/{i}", capacity=capacity)
        for i, capacity in enumerate(capacities)
    )


@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=6).flatmap(
        lambda caps: st.tuples(st.just(caps), st.tuples(*(st.integers(0, cap + 2) for cap in caps)))
    )
)
def test_placement_takes_the_server_with_the_lowest_share_in_use_and_never_a_full_one(
    case: tuple[list[int], tuple[int, ...]],
) -> None:
    capacities, used = case
    pool = pool_of(*capacities)
    counts: dict[str | None, int] = {f"s{i}": n for i, n in enumerate(used)}
    room = [i for i, (cap, n) in enumerate(zip(capacities, used, strict=True)) if n < cap]
    if not room:
        with pytest.raises(ServerFull, match="every database server is full"):
            pool.choose(counts)
        return
    chosen = int(pool.choose(counts).removeprefix("s"))
    assert chosen in room
    shares = {i: used[i] / capacities[i] for i in room}
    assert shares[chosen] == min(shares.values())
    assert chosen == min(i for i in room if shares[i] == shares[chosen])  # first listed on a tie


@given(st.integers(1, 20), st.integers(0, 25))
def test_a_server_asked_for_by_name_takes_the_tenant_only_while_it_has_room(
    capacity: int, used: int
) -> None:
    pool = pool_of(1000, capacity)
    if used < capacity:
        assert pool.choose({"s1": used}, "s1") == "s1"
    else:
        with pytest.raises(ServerFull, match="'s1' is full"):
            pool.choose({"s1": used}, "s1")


def test_an_unknown_server_is_refused_naming_the_configured_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"no database server named 'nope'; .*s0, s1"):
        pool_of(1, 1).choose({}, "nope")


def test_the_pool_reads_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = [
        {"name": "pg1", "url": "postgresql+asyncpg://app:hunter2@db1/app", "capacity": 500},
        {"name": "pg2", "url": "postgresql+asyncpg://app:hunter2@db2/app", "capacity": 200},
    ]
    monkeypatch.setenv("TENANCY_DATABASE_SERVERS", json.dumps(servers))
    monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", "database")
    monkeypatch.setenv("TENANCY_DATABASE_URL", "postgresql+asyncpg://app@db1/central")
    config = TenancyConfig()
    assert [(s.name, s.capacity) for s in config.database_servers] == [("pg1", 500), ("pg2", 200)]
    assert "hunter2" not in repr(config)
    assert "hunter2" not in repr(config.database_servers)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"isolation_strategy": "row"}, "needs isolation_strategy 'schema' or 'database'"),
        (
            {"servers": [{"name": "default", "url": "postgresql+asyncpg://h/d", "capacity": 1}]},
            "reserved or listed twice",
        ),
        (
            {"servers": [{"name": "a", "url": "postgresql+asyncpg://h/d", "capacity": 1}] * 2},
            "reserved or listed twice",
        ),
        (
            {"servers": [{"name": "a", "url": "postgresql://h/d", "capacity": 1}]},
            "names no driver",
        ),
        (
            {"servers": [{"name": "a", "url": "postgresql+asyncpg://h/d", "capacity": 0}]},
            "greater than or equal to 1",
        ),
        (
            {"servers": [{"name": "a", "url": "sqlite+aiosqlite:///x.db", "capacity": 1}]},
            "needs a '{database}' placeholder",
        ),
    ],
)
def test_a_pool_that_cannot_work_is_refused_with_the_reason(
    settings: dict[str, Any], message: str
) -> None:
    values: dict[str, Any] = {
        "database_url": "postgresql+asyncpg://h/central",
        "isolation_strategy": "database",
        "database_servers": [{"name": "a", "url": "postgresql+asyncpg://h/d", "capacity": 1}],
    }
    if "servers" in settings:
        values["database_servers"] = settings.pop("servers")
    with pytest.raises(ConfigurationError, match=message):
        TenancyConfig(**(values | settings))


# -- concurrent placement: the lock in the central database --------------------------------------

CENTRALS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
    pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
]


@pytest.mark.parametrize("central", CENTRALS)
async def test_creators_racing_in_two_runtimes_never_overfill_a_server(
    central: str, tmp_path: Path
) -> None:
    url = {"sqlite": f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"}.get(central)
    if url is None:
        url = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL}[central]
        require_server(central, url, 5432 if central == "postgres" else 3306)
        await reset_database(url)
    template = database_url_template(url)
    capacities = {"a": 3, "b": 5}
    config = TenancyConfig(
        database_url=url,
        isolation_strategy="database",
        schema_prefix=TEST_STORAGE_PREFIX,
        database_servers=[
            {"name": name, "url": template, "capacity": capacity}
            for name, capacity in capacities.items()
        ],
    )
    # Two runtimes, each with its own engine (its own connections): as two processes would be.
    async with Tenancy(config) as first, Tenancy(config) as second:
        results = await asyncio.gather(
            *(
                (first if i % 2 else second).create_tenant(f"t{i}", provision=False)
                for i in range(12)
            ),
            return_exceptions=True,
        )
        placed = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(r, ServerFull) for r in refused), refused
        servers = [t.server for t in await first.list_tenants(include_deleted=True)]
    assert len(placed) == sum(capacities.values())
    assert {name: servers.count(name) for name in capacities} == capacities
    if central != "sqlite":
        await reset_database(url)


async def test_a_store_that_cannot_place_is_placed_under_the_pools_own_lock(
    tmp_path: Path,
) -> None:
    template = f"sqlite+aiosqlite:///{tmp_path}/{{database}}.db"
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        isolation_strategy="database",
        database_servers=[
            {"name": "a", "url": template, "capacity": 2},
            {"name": "b", "url": template, "capacity": 3},
        ],
    )
    async with Tenancy(config, store=MemoryTenantStore()) as tenancy:
        results = await asyncio.gather(
            *(tenancy.create_tenant(f"m{i}", provision=False) for i in range(8)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, ServerFull) for r in results) == 3
        servers = [t.server for t in await tenancy.list_tenants()]
    assert (servers.count("a"), servers.count("b")) == (2, 3)


CREATOR = """
import asyncio, json, sys
from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.isolation.placement import ServerFull

async def main() -> None:
    placed = refused = 0
    async with Tenancy(TenancyConfig(**json.loads(sys.argv[1]))) as tenancy:
        for name in sys.argv[2:]:
            try:
                await tenancy.create_tenant(name, provision=False)
                placed += 1
            except ServerFull:
                refused += 1
    print(json.dumps([placed, refused]))

asyncio.run(main())
"""


# Two interpreters start and import the library (about 10 s on a loaded 2-core machine), so this
# runs outside the default suite; the two-runtime test above covers the same lock by default.
@pytest.mark.slow
@pytest.mark.postgres
async def test_two_processes_creating_at_once_never_overfill_a_server() -> None:
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    settings: dict[str, Any] = {
        "database_url": POSTGRES_URL,
        "isolation_strategy": "database",
        "schema_prefix": TEST_STORAGE_PREFIX,
        "database_servers": [
            {"name": "a", "url": database_url_template(POSTGRES_URL), "capacity": 4},
            {"name": "b", "url": database_url_template(POSTGRES_URL), "capacity": 3},
        ],
    }
    async with Tenancy(TenancyConfig(**settings)):  # the tables exist before the race
        pass
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CREATOR,
            json.dumps(settings),
            *(f"p{which}-{i}" for i in range(6)),
            stdout=asyncio.subprocess.PIPE,
        )
        for which in (1, 2)
    ]
    outputs = [json.loads((await p.communicate())[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sum(placed for placed, _ in outputs) == 7
    assert sum(refused for _, refused in outputs) == 5
    async with Tenancy(TenancyConfig(**settings)) as tenancy:
        servers = [t.server for t in await tenancy.list_tenants(include_deleted=True)]
    assert (servers.count("a"), servers.count("b")) == (4, 3)
    await reset_database(POSTGRES_URL)


# -- two real PostgreSQL servers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_database(second_postgres: PostgresCluster) -> str:
    """A database on the second server that schema tenants live in (and beside which
    database tenants get theirs); the server goes, with it, at the end of the session."""
    return second_postgres.create_database(f"{TEST_STORAGE_PREFIX}servers")


async def _drop_tenant_databases(url: str) -> None:
    admin = create_async_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as conn:
            names = await conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                {"prefix": TEST_STORAGE_PREFIX.replace("_", "\\_") + "%"},
            )
            keep = make_url(url).database
            for (name,) in names.all():
                if name != keep:
                    await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.begin() as conn:
            schemas = await conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :prefix"),
                {"prefix": TEST_STORAGE_PREFIX.replace("_", "\\_") + "%"},
            )
            for (schema,) in schemas.all():
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()
    finally:
        await admin.dispose()


@pytest.fixture
async def two_servers(cluster_database: str) -> AsyncIterator[dict[str, str]]:
    """``{"pg1": the suite's database, "pg2": the second server's}``, emptied around the test."""
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    await _drop_tenant_databases(cluster_database)
    yield {"pg1": POSTGRES_URL, "pg2": cluster_database}
    await _drop_tenant_databases(cluster_database)
    await reset_database(POSTGRES_URL)


def pool_config(
    strategy: str, servers: dict[str, str], capacity: int = 2, **overrides: Any
) -> TenancyConfig:
    settings: dict[str, Any] = dict(
        database_url=POSTGRES_URL,
        isolation_strategy=strategy,
        tenant_metadata=Base.metadata,
        schema_prefix=TEST_STORAGE_PREFIX,
        database_url_template=database_url_template(POSTGRES_URL),
        database_servers=[
            {"name": name, "url": url, "capacity": capacity} for name, url in servers.items()
        ],
    )
    return TenancyConfig(**(settings | overrides))


async def _storage_on(url: str, strategy: str, name: str | None) -> bool:
    if strategy == "database":
        url = make_url(url).set(database="postgres").render_as_string(hide_password=False)
        query = "SELECT 1 FROM pg_database WHERE datname = :name"
    else:
        query = "SELECT 1 FROM pg_namespace WHERE nspname = :name"
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(query), {"name": name})).first() is not None
    finally:
        await engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["database", "schema"])
async def test_tenants_spread_over_two_servers_and_each_sees_only_its_own_rows(
    strategy: str, two_servers: dict[str, str]
) -> None:
    async with Tenancy(pool_config(strategy, two_servers, capacity=2)) as tenancy:
        a = await tenancy.create_tenant("alpha")
        b = await tenancy.create_tenant("beta")
        c = await tenancy.create_tenant("gamma", server="pg2")
        assert (a.server, b.server, c.server) == ("pg1", "pg2", "pg2")
        with pytest.raises(ServerFull, match="'pg2' is full"):
            await tenancy.create_tenant("delta", server="pg2")
        d = await tenancy.create_tenant("delta")
        assert d.server == "pg1"
        with pytest.raises(ServerFull, match="every database server is full"):
            await tenancy.create_tenant("epsilon")
        assert await tenancy.get_tenant("epsilon") is None  # nothing half-made is left

        # Each tenant's storage is on its own server, and only there.
        for tenant in (a, b, c, d):
            home, away = ("pg1", "pg2") if tenant.server == "pg1" else ("pg2", "pg1")
            assert await _storage_on(two_servers[home], strategy, tenant.storage_name)
            assert not await _storage_on(two_servers[away], strategy, tenant.storage_name)

        for tenant in (a, b, c, d):
            async with tenancy.session(tenant.identifier) as session:
                session.add(Item(name=f"from {tenant.identifier}"))
                await session.commit()
        for tenant in (a, b, c, d):
            async with tenancy.session(tenant.identifier) as session:
                bodies = (await session.scalars(select(Item.name))).all()
            assert bodies == [f"from {tenant.identifier}"]

        # A purge removes the storage from the tenant's own server and frees its place.
        await tenancy.delete_tenant("gamma")
        await tenancy.purge_tenant("gamma")
        assert not await _storage_on(two_servers["pg2"], strategy, c.storage_name)
        assert (await tenancy.create_tenant("epsilon")).server == "pg2"


@pytest.mark.postgres
async def test_tenants_without_a_server_stay_on_the_default_one_when_a_pool_is_added(
    two_servers: dict[str, str],
) -> None:
    single = pool_config("schema", {})
    async with Tenancy(single) as tenancy:
        old = await tenancy.create_tenant("old")
    assert old.server is None
    async with Tenancy(pool_config("schema", {"pg2": two_servers["pg2"]})) as tenancy:
        new = await tenancy.create_tenant("new")
        assert new.server == "pg2"
        for tenant in (old, new):
            async with tenancy.session(tenant.identifier) as session:
                session.add(Item(name=tenant.identifier))
                await session.commit()
            async with tenancy.session(tenant.identifier) as session:
                assert (await session.scalars(select(Item.name))).all() == [tenant.identifier]
    assert await _storage_on(POSTGRES_URL, "schema", old.storage_name)
    assert not await _storage_on(two_servers["pg2"], "schema", old.storage_name)


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["database", "schema"])
async def test_migrations_run_on_every_server_with_a_limit_per_server(
    strategy: str, two_servers: dict[str, str], tmp_path: Path
) -> None:
    config = pool_config(
        strategy, two_servers, capacity=1, tenant_metadata=MetaData(), tenant_tables="none"
    )
    script = alembic_config(tmp_path / "alembic")
    async with Tenancy(config) as tenancy:
        for name in ("m1", "m2"):
            await tenancy.create_tenant(name)
        tenants = {t.identifier: t for t in await tenancy.list_tenants()}
        assert sorted(t.server or "" for t in tenants.values()) == ["pg1", "pg2"]
        report = await upgrade(tenancy, script, concurrency=1)
        assert (report.upgraded, report.failed) == (2, 0), report
        again = await upgrade(tenancy, script, concurrency=1)
        assert (again.skipped, again.failed) == (2, 0), again
    for tenant in tenants.values():
        url = two_servers[tenant.server or ""]
        if strategy == "database":
            url = (
                make_url(url)
                .set(database=tenant.storage_name)
                .render_as_string(hide_password=False)
            )
            query = "SELECT version_num FROM alembic_version"
        else:
            query = f'SELECT version_num FROM "{tenant.storage_name}".alembic_version'
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                assert (await conn.execute(text(query))).scalar_one() == SECOND
        finally:
            await engine.dispose()


@pytest.mark.postgres
def test_the_cli_places_lists_and_checks_tenants_per_server(
    two_servers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TENANCY_DATABASE_URL", POSTGRES_URL)
    monkeypatch.setenv("TENANCY_ISOLATION_STRATEGY", "schema")
    monkeypatch.setenv("TENANCY_SCHEMA_PREFIX", TEST_STORAGE_PREFIX)
    monkeypatch.setenv("TENANCY_TENANT_METADATA", "tests.support.models:Base.metadata")
    servers = [{"name": name, "url": url, "capacity": 2} for name, url in two_servers.items()]
    monkeypatch.setenv("TENANCY_DATABASE_SERVERS", json.dumps(servers))

    assert main(["tenants", "create", "acme", "--server", "pg2"]) == 0
    assert "created tenant acme (active) on server pg2" in capsys.readouterr().out
    assert main(["tenants", "create", "bolt"]) == 0
    assert main(["tenants", "create", "core", "--server", "nope"]) == 1
    assert "no database server named 'nope'" in capsys.readouterr().err

    assert main(["tenants", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[-1] == "SERVER"
    assert {line.split()[0]: line.split()[-1] for line in lines[1:3]} == {
        "acme": "pg2",
        "bolt": "pg1",
    }
    assert "tenants per server: pg1: 1/2, pg2: 1/2" in out
    assert main(["tenants", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {t["identifier"]: t["server"] for t in listed} == {"acme": "pg2", "bolt": "pg1"}

    assert main(["tenants", "create", "dash", "--server", "pg2"]) == 0
    capsys.readouterr()
    assert main(["doctor", "--json"]) == 0
    checks = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "servers"]
    assert [(c["status"], c["message"].split(",")[0]) for c in checks] == [
        ("ok", "server pg1: 1/2 tenants"),
        ("warn", "server pg2: 2/2 tenants"),
    ]
    # A server dropped from the list while tenants live there fails the doctor.
    monkeypatch.setenv("TENANCY_DATABASE_SERVERS", json.dumps(servers[:1]))
    assert main(["doctor", "--json"]) == 1
    checks = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "servers"]
    assert checks[-1]["status"] == "fail"
    assert "2 tenants are on server 'pg2'" in checks[-1]["message"]
    assert "nope" not in json.dumps(checks)


@pytest.mark.postgres
async def test_the_tenants_per_server_gauge_follows_creates_and_purges(
    two_servers: dict[str, str],
) -> None:
    def gauge(tenancy: Tenancy) -> dict[str, float]:
        assert tenancy.metrics is not None
        assert tenancy.metrics.registry is not None
        return {
            sample.labels["server"]: sample.value
            for family in tenancy.metrics.registry.collect()
            if family.name == "fastapi_tenancy_server_tenants"
            for sample in family.samples
        }

    async with Tenancy(pool_config("schema", {}, enable_metrics=True)) as tenancy:
        await tenancy.create_tenant("before")  # on the default server, before the pool
    config = pool_config("schema", two_servers, capacity=5, enable_metrics=True)
    async with Tenancy(config) as tenancy:
        await tenancy.start()
        assert gauge(tenancy) == {"default": 1, "pg1": 0, "pg2": 0}
        await tenancy.create_tenant("one")
        await tenancy.create_tenant("two")
        assert gauge(tenancy) == {"default": 1, "pg1": 1, "pg2": 1}
        await tenancy.delete_tenant("two")
        assert gauge(tenancy)["pg2"] == 1  # soft-deleted: its storage is still there
        await tenancy.purge_tenant("two")
        assert gauge(tenancy) == {"default": 1, "pg1": 1, "pg2": 0}

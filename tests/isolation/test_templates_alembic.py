"""With ``alembic_config``, a new tenant is made at the Alembic head, from a template.

The central property: for generated revision histories (tables, indexes, foreign keys, enums,
server defaults, seeded rows, and views that a copy cannot carry), a tenant provisioned from the
template and a tenant provisioned empty and then migrated with ``migrate upgrade`` give the same
catalog dump, on PostgreSQL (schema and database isolation) and MariaDB (schema isolation).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy, TenancyConfig, Tenant
from fastapi_tenancy.isolation.alembic_template import catalog_dump
from fastapi_tenancy.migrations import status, upgrade
from tests.support.backends import isolation_config
from tests.support.hypothesis_profiles import ROW_PROPERTY

# An example runs a history three times (template, probe, migrated tenant): fewer of them.
HISTORIES = settings(ROW_PROPERTY, max_examples=10)

# The strategies that copy a template, on the servers that run them.
TEMPLATED = [
    pytest.param(("schema", "postgres"), marks=pytest.mark.postgres, id="schema-postgres"),
    pytest.param(("schema", "mysql"), marks=pytest.mark.mysql, id="schema-mysql"),
    pytest.param(("database", "postgres"), marks=pytest.mark.postgres, id="database-postgres"),
]
templated = pytest.mark.parametrize("isolation_case", TEMPLATED, indirect=True)

ENV_PY = """\
from fastapi_tenancy.migrations import run_migrations

run_migrations(target_metadata=None)
"""


@dataclass(frozen=True)
class TableSpec:
    key: str  # "serial", "identity" or "string"
    text_default: bool
    enum: bool
    indexed: bool
    unique: bool
    parent: bool  # a foreign key to the previous table
    rows: int


@dataclass(frozen=True)
class History:
    tables: tuple[TableSpec, ...]
    view: bool  # a view: what a copy cannot carry, so each tenant runs the revisions


def _table_revision(
    number: int, spec: TableSpec, parent: TableSpec | None, *, postgres: bool
) -> list[str]:
    """The body of ``upgrade()`` creating table ``t<number>``, its index and its rows."""
    name = f"t{number}"
    columns = []
    if spec.key == "string":
        columns.append('sa.Column("id", sa.String(20), primary_key=True)')
    elif spec.key == "identity" and postgres:
        columns.append('sa.Column("id", sa.Integer, sa.Identity(), primary_key=True)')
    else:
        columns.append('sa.Column("id", sa.Integer, primary_key=True)')
    columns.append('sa.Column("tenant_id", sa.String(64), nullable=False, server_default="t")')
    default = ', server_default="hello"' if spec.text_default else ""
    columns.append(f'sa.Column("label", sa.String(40), nullable=True{default})')
    columns.append('sa.Column("amount", sa.Numeric(10, 2), nullable=False, server_default="0")')
    if spec.enum:
        columns.append(f'sa.Column("kind", sa.Enum("a", "b", name="{name}_kind"), nullable=True)')
    if spec.parent and parent is not None:
        parent_key = "sa.String(20)" if parent.key == "string" else "sa.Integer"
        columns.append(
            f'sa.Column("parent_id", {parent_key}, '
            f'sa.ForeignKey("t{number - 1}.id", ondelete="CASCADE"), nullable=True)'
        )
    body = [f'    op.create_table("{name}", ' + ", ".join(columns) + ")"]
    if spec.indexed:
        unique = "True" if spec.unique else "False"
        body.append(f'    op.create_index("ix_{name}_label", "{name}", ["label"], unique={unique})')
    for row in range(spec.rows):
        if spec.key == "string":
            insert = f"INSERT INTO {name} (id, label) VALUES ('r{row}', 'v{row}')"
        else:
            insert = f"INSERT INTO {name} (label, amount) VALUES ('v{row}', {row + 1})"
        body.append(f'    op.execute("{insert}")')
    return body


def write_history(folder: Path, history: History, *, postgres: bool) -> tuple[str, list[str]]:
    """An Alembic script directory for ``history`` in ``folder``: its ini path and revisions."""
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY, encoding="utf-8")
    bodies = []
    for number, spec in enumerate(history.tables):
        parent = history.tables[number - 1] if number else None
        bodies.append(_table_revision(number, spec, parent, postgres=postgres))
    if history.view:
        bodies.append(['    op.execute("CREATE VIEW t0_view AS SELECT id, label FROM t0")'])
    revisions: list[str] = []
    for body in bodies:
        revision = uuid.uuid4().hex[:12]
        down = f'"{revisions[-1]}"' if revisions else "None"
        source = "\n".join(
            [
                "import sqlalchemy as sa",
                "from alembic import op",
                f'revision = "{revision}"',
                f"down_revision = {down}",
                "branch_labels = None",
                "depends_on = None",
                "",
                "def upgrade() -> None:",
                *body,
                "",
                "def downgrade() -> None:",
                "    pass",
                "",
            ]
        )
        (folder / "versions" / f"{revision}.py").write_text(source, encoding="utf-8")
        revisions.append(revision)
    ini = folder / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {folder}\n", encoding="utf-8")
    return str(ini), revisions


tables = st.builds(
    TableSpec,
    key=st.sampled_from(["serial", "identity", "string"]),
    text_default=st.booleans(),
    enum=st.booleans(),
    indexed=st.booleans(),
    unique=st.booleans(),
    parent=st.booleans(),
    rows=st.integers(min_value=0, max_value=2),
)
histories = st.builds(
    History,
    tables=st.lists(tables, min_size=1, max_size=4).map(tuple),
    view=st.booleans(),
)

FIVE_TABLES = History(
    tables=(
        TableSpec("serial", True, True, True, False, False, 1),
        TableSpec("identity", False, False, True, True, True, 2),
        TableSpec("string", True, True, False, False, False, 1),
        TableSpec("serial", True, False, True, False, True, 0),
        TableSpec("serial", False, True, False, False, True, 1),
    ),
    view=False,
)


@asynccontextmanager
async def tenant_storage(
    config: TenancyConfig, tenant: Tenant
) -> AsyncIterator[tuple[AsyncConnection, str]]:
    """A connection reaching ``tenant``'s storage, and the schema (database) to dump."""
    assert tenant.storage_name is not None
    url, schema = config.database_url, tenant.storage_name
    if config.isolation_strategy == "database":
        assert config.database_url_template is not None
        url = config.database_url_template.format(database=tenant.storage_name)
        schema = "public"
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            yield conn, schema
    finally:
        await engine.dispose()


async def dump(config: TenancyConfig, tenant: Tenant) -> list[str]:
    async with tenant_storage(config, tenant) as (conn, schema):
        return await catalog_dump(conn, schema)


async def template_made_and_migrated(
    case: tuple[str, str], ini: str
) -> tuple[list[str], list[str], TenancyConfig, Tenant]:
    """Dumps of a tenant made from the template and one made empty then migrated."""
    templated_config = isolation_config(case, tenant_metadata=MetaData(), alembic_config=ini)
    plain_config = isolation_config(case, tenant_metadata=MetaData(), tenant_tables="none")
    suffix = uuid.uuid4().hex[:6]
    async with Tenancy(templated_config) as tenancy:
        made = await tenancy.create_tenant(f"made-{suffix}")
    async with Tenancy(plain_config) as tenancy:
        migrated = await tenancy.create_tenant(f"migrated-{suffix}")
        report = await upgrade(tenancy, Config(ini), identifiers=[migrated.identifier])
        assert report.ok, report
    return (
        await dump(templated_config, made),
        await dump(plain_config, migrated),
        templated_config,
        made,
    )


@templated
async def test_a_tenant_made_from_the_template_matches_one_migrated_from_scratch(
    isolation_case: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini, revisions = write_history(
        tmp_path / "alembic", FIVE_TABLES, postgres="postgres" in isolation_case[1]
    )
    with caplog.at_level(logging.WARNING, logger="fastapi_tenancy.lifecycle"):
        made, migrated, config, tenant = await template_made_and_migrated(isolation_case, ini)
    assert made == migrated
    # Copied from the template: no reason to run the revisions in the tenant was found.
    assert not [r for r in caplog.records if "template" in r.getMessage()]
    assert any(line.startswith("rows t0 ") for line in made)
    async with Tenancy(config) as tenancy:
        (revision,) = await status(tenancy, Config(ini), identifiers=[tenant.identifier])
    assert revision.revision == revisions[-1]
    assert not revision.pending


@templated
@HISTORIES
@given(history=histories)
async def test_generated_histories_give_the_same_tenant_from_the_template_as_migrated(
    isolation_case: tuple[str, str], history: History
) -> None:
    said: list[str] = []
    handler = _Collect(said)
    lifecycle = logging.getLogger("fastapi_tenancy.lifecycle")
    lifecycle.addHandler(handler)
    try:
        with tempfile.TemporaryDirectory() as folder:
            ini, _ = write_history(
                Path(folder) / "alembic", history, postgres="postgres" in isolation_case[1]
            )
            made, migrated, _, _ = await template_made_and_migrated(isolation_case, ini)
    finally:
        lifecycle.removeHandler(handler)
    assert made == migrated
    # A schema copy cannot carry a view: that, and only that, sends each tenant to its revisions
    # (a database copy carries everything).
    fell_back = any("cannot be copied" in message for message in said)
    assert fell_back == (history.view and isolation_case[0] == "schema"), said


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into.append(record.getMessage())


@pytest.mark.parametrize(
    "isolation_case", [p for p in TEMPLATED if "schema" in str(p.id)], indirect=True
)
async def test_a_view_makes_each_tenant_run_the_revisions_and_says_why_once(
    isolation_case: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history = History(tables=FIVE_TABLES.tables[:2], view=True)
    ini, _ = write_history(tmp_path / "alembic", history, postgres="postgres" in isolation_case[1])
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), alembic_config=ini)
    with caplog.at_level(logging.WARNING, logger="fastapi_tenancy.lifecycle"):
        async with Tenancy(config) as tenancy:
            first = await tenancy.create_tenant("first")
            second = await tenancy.create_tenant("second")
    said = [r for r in caplog.records if "cannot be copied faithfully" in r.getMessage()]
    assert len(said) == 1
    assert "view" in said[0].getMessage()
    assert any("t0_view" in line for line in await dump(config, first))
    assert await dump(config, first) == await dump(config, second)


@templated
async def test_processes_provisioning_at_once_build_one_template(
    isolation_case: tuple[str, str], tmp_path: Path
) -> None:
    ini, revisions = write_history(
        tmp_path / "alembic", FIVE_TABLES, postgres="postgres" in isolation_case[1]
    )
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), alembic_config=ini)
    # Separate runtimes stand for separate processes: nothing is shared but the server.
    async with Tenancy(config) as a, Tenancy(config) as b, Tenancy(config) as c:
        made = await asyncio.gather(
            a.create_tenant("one"), b.create_tenant("two"), c.create_tenant("three")
        )
        reports = await status(a, Config(ini))
    dumps = [await dump(config, tenant) for tenant in made]
    assert dumps[0] == dumps[1] == dumps[2]
    assert {r.revision for r in reports} == {revisions[-1]}


@templated
async def test_a_new_revision_makes_a_new_template_and_drops_the_old_one(
    isolation_case: tuple[str, str], tmp_path: Path
) -> None:
    postgres = "postgres" in isolation_case[1]
    ini, _ = write_history(tmp_path / "alembic", FIVE_TABLES, postgres=postgres)
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), alembic_config=ini)
    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("before")
    before = await template_names(config)
    assert len(before) == 1
    new = uuid.uuid4().hex[:12]
    old_head = sorted((tmp_path / "alembic" / "versions").glob("*.py"))
    heads = {p.stem for p in old_head}
    downs = {
        line.split('"')[1]
        for p in old_head
        for line in p.read_text().splitlines()
        if line.startswith("down_revision = ") and '"' in line
    }
    (head,) = heads - downs
    (tmp_path / "alembic" / "versions" / f"{new}.py").write_text(
        "\n".join(
            [
                "import sqlalchemy as sa",
                "from alembic import op",
                f'revision = "{new}"',
                f'down_revision = "{head}"',
                "branch_labels = None",
                "depends_on = None",
                "def upgrade() -> None:",
                '    op.add_column("t0", sa.Column("note", sa.String(10)))',
                "def downgrade() -> None:",
                "    pass",
                "",
            ]
        ),
        encoding="utf-8",
    )
    async with Tenancy(config) as tenancy:
        after_tenant = await tenancy.create_tenant("after")
        (found,) = await status(tenancy, Config(ini), identifiers=["after"])
    assert found.revision == new
    assert any("note" in line for line in await dump(config, after_tenant))
    after = await template_names(config)
    assert len(after) == 1
    assert after != before


async def template_names(config: TenancyConfig) -> set[str]:
    engine = create_async_engine(config.database_url, poolclass=NullPool)
    like = config.schema_prefix.replace("_", "\\_") + "alembic\\_%"
    try:
        async with engine.connect() as conn:
            if config.isolation_strategy == "database":
                query = "SELECT datname FROM pg_database WHERE datname LIKE :like"
            else:
                query = (
                    "SELECT schema_name FROM information_schema.schemata "
                    "WHERE schema_name LIKE :like"
                )
            return set((await conn.scalars(text(query), {"like": like})).all())
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "isolation_case", [p for p in TEMPLATED if p.id == "schema-postgres"], indirect=True
)
async def test_a_schema_tenant_copied_from_the_template_is_one_statement_with_its_record(
    isolation_case: tuple[str, str], tmp_path: Path
) -> None:
    ini, revisions = write_history(tmp_path / "alembic", FIVE_TABLES, postgres=True)
    config = isolation_config(isolation_case, tenant_metadata=MetaData(), alembic_config=ini)
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    async with Tenancy(config) as tenancy:
        await tenancy.create_tenant("warmup")  # builds, reads and checks the template
        event.listen(tenancy.engine.sync_engine, "before_cursor_execute", record)
        try:
            acme = await tenancy.create_tenant("acme")
        finally:
            event.remove(tenancy.engine.sync_engine, "before_cursor_execute", record)
        (found,) = await status(tenancy, Config(ini), identifiers=["acme"])
    assert len(sent) == 1, sent
    assert "tenancy_tenants" in sent[0]
    assert f'CREATE SCHEMA "{acme.storage_name}"' in sent[0]
    assert f'INSERT INTO "{acme.storage_name}"."alembic_version"' in sent[0]
    assert found.revision == revisions[-1]
    assert not found.pending

"""``alembic revision --autogenerate`` for tenant tables, run from the user's env.py.

Autogenerate compares the models with a database at the script's head. Under row isolation that
is the central database, where the shared tables are (as with plain Alembic). Under schema and
database isolation no real tenant is used: a scratch schema (PostgreSQL) or database
(MariaDB/MySQL, and database isolation) named ``tenancy_autogenerate_<random>`` is created,
brought to head by the script's own revisions through env.py as the runner would, compared with
the models, and dropped. Real tenants are never read or written, a tenant that lags behind
cannot skew the comparison, and it works before the first tenant exists.

The settings come from the environment (``TENANCY_DATABASE_URL``, ``TENANCY_ISOLATION_STRATEGY``,
``TENANCY_DATABASE_URL_TEMPLATE``), as for the ``fastapi-tenancy`` command.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from alembic import context
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastapi_tenancy import _wiring
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.isolation.servers import create_database, drop_database
from fastapi_tenancy.isolation.tables import shared_tables
from fastapi_tenancy.migrations.errors import MigrationError
from fastapi_tenancy.migrations.invoke import run_alembic
from fastapi_tenancy.migrations.targets import MigrationTarget

__all__ = ["SCRATCH_PREFIX", "autogenerating", "autogenerate_revision"]

SCRATCH_PREFIX = "tenancy_autogenerate_"
_T = TypeVar("_T")

Compare = Callable[[Connection], None]


def autogenerating() -> bool:
    """Whether env.py runs for ``alembic revision --autogenerate`` (CLI or `command.revision`)."""
    environment = _environment()
    revision_context = environment.context_opts.get("revision_context")
    if revision_context is not None:
        return bool(revision_context.command_args.get("autogenerate"))
    return bool(getattr(environment.config.cmd_opts, "autogenerate", False))


def autogenerate_revision(
    target_metadata: MetaData | list[MetaData] | None, options: dict[str, Any]
) -> None:
    """Compare ``target_metadata`` with a database at head (see the module) and let Alembic
    write the revision; ``options`` go to ``context.configure``."""
    environment = _environment()

    def compare(connection: Connection) -> None:
        # The scratch upgrade ran env.py in an EnvironmentContext of its own, whose exit removed
        # alembic.context's module-level proxy: put this command's back before using it.
        environment._install_proxy()
        # No version_table_schema: the search path already points at the scratch schema, and
        # autogenerate leaves out the version table only where it reflects (the default schema).
        environment.configure(connection=connection, target_metadata=target_metadata, **options)
        with environment.begin_transaction():
            environment.run_migrations()

    config = TenancyConfig()
    if config.isolation_strategy != "row":
        options = _tenant_tables_only(target_metadata, options)
    _run(_against_head(config, environment, compare))


def _tenant_tables_only(
    target_metadata: MetaData | list[MetaData] | None, options: dict[str, Any]
) -> dict[str, Any]:
    """``options`` with an ``include_object`` hook that leaves shared tables out.

    Under schema and database isolation a tenant revision runs in every tenant's schema or
    database; a shared table (`fastapi_tenancy.isolation.tables.shared_tables`, the rule
    provisioning uses) lives once, in the central database, and belongs to no tenant revision,
    neither to create nor to drop.
    """
    if target_metadata is None:
        return options
    shared = {table.name for table in shared_tables(target_metadata)}
    user_hook = options.get("include_object")

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in shared:
            return False
        if user_hook is not None:
            return bool(user_hook(obj, name, type_, reflected, compare_to))
        return True

    return {**options, "include_object": include_object}


def _environment() -> EnvironmentContext:
    # alembic.context is a module-level proxy of the running command's EnvironmentContext.
    found = getattr(context, "_proxy", None)
    if not isinstance(found, EnvironmentContext):
        raise MigrationError("no Alembic command is running")
    return found


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to the end from sync code, with or without a running loop here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from async code (a test, a notebook): a loop of its own in a worker thread; this
    # thread waits, so Alembic's module-level proxies still see one command at a time.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _against_head(
    config: TenancyConfig, environment: EnvironmentContext, compare: Compare
) -> None:
    central = _wiring.central_engine(config, pool_size=1, max_overflow=0, echo=False)
    try:
        strategy = config.isolation_strategy
        if strategy == "row":
            async with central.connect() as conn, conn.begin():
                await conn.run_sync(compare)
            return
        name = checked_storage_name(SCRATCH_PREFIX + secrets.token_hex(4))
        if strategy == "schema" and central.dialect.name == "postgresql":
            await _in_scratch_schema(central, name, environment, compare)
        elif strategy == "schema":
            server = make_url(config.database_url).set(database=name)
            await _in_scratch_database(
                server.render_as_string(hide_password=False), name, config, environment, compare
            )
        else:
            template = config.database_url_template
            if template is None:
                raise ConfigurationError(
                    "database isolation needs TENANCY_DATABASE_URL_TEMPLATE to autogenerate"
                )
            url = template.format(database=name)
            await _in_scratch_database(url, name, config, environment, compare)
    finally:
        await central.dispose()


async def _in_scratch_schema(
    central: AsyncEngine, name: str, environment: EnvironmentContext, compare: Compare
) -> None:
    async with central.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        async with central.connect() as conn:
            target = MigrationTarget(tenant=None, url=None, schema=name, lock_key=name)
            await _upgrade_scratch(conn, environment, target)
            async with conn.begin():
                # Unqualified names resolve in the scratch schema only, as in a migration.
                await conn.execute(
                    text("SELECT set_config('search_path', :path, true)"), {"path": f'"{name}"'}
                )
                await conn.run_sync(compare)
    finally:
        async with central.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


async def _in_scratch_database(
    url: str,
    name: str,
    config: TenancyConfig,
    environment: EnvironmentContext,
    compare: Compare,
) -> None:
    await create_database(url, name)
    try:
        engine = _wiring.central_engine(config, url, pool_size=1, max_overflow=0, echo=False)
        try:
            async with engine.connect() as conn:
                target = MigrationTarget(tenant=None, url=url, schema=None, lock_key=name)
                await _upgrade_scratch(conn, environment, target)
                async with conn.begin():
                    await conn.run_sync(compare)
        finally:
            await engine.dispose()
    finally:
        await drop_database(url, name)


async def _upgrade_scratch(
    conn: AsyncConnection, environment: EnvironmentContext, target: MigrationTarget
) -> None:
    """Bring the scratch storage to head with the script's own revisions, through env.py."""
    async with conn.begin():
        await run_alembic(conn, environment.config, target, "heads", "upgrade")

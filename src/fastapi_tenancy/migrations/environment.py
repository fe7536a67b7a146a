"""`run_migrations`: the body of a user's ``alembic/env.py`` under fastapi-tenancy.

The runner (`fastapi_tenancy.migrations.upgrade`) opens the connection, takes the tenant's lock
and begins the transaction; it hands them to env.py in ``context.config.attributes``:

* ``"connection"``: a sync `Connection` inside the runner's transaction;
* ``"tenant"``: the `Tenant` being migrated, or ``None`` for row isolation's shared tables;
* ``"schema"``: the PostgreSQL schema to target, or ``None`` when the connection already points
  at the right database (row and database isolation, and schema isolation on MariaDB/MySQL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.isolation.tables import LIBRARY_TABLE_PREFIX
from fastapi_tenancy.migrations.errors import MigrationError

__all__ = ["CONNECTION_KEY", "SCHEMA_KEY", "TENANT_KEY", "run_migrations"]

CONNECTION_KEY = "connection"
TENANT_KEY = "tenant"
SCHEMA_KEY = "schema"


def run_migrations(
    target_metadata: MetaData | list[MetaData] | None = None, **configure_options: Any
) -> None:
    """Configure Alembic for the connection and tenant the runner provides, and migrate.

    ``configure_options`` go to ``context.configure`` as they are (``compare_type=True``, a
    ``process_revision_directives`` hook, ...); the connection and version table location are
    set here. Offline mode (``alembic upgrade --sql``) is not supported: each tenant needs a
    live connection, a lock and its own schema or database.
    """
    if context.is_offline_mode():
        raise MigrationError(
            "fastapi-tenancy migrations run online only: offline mode (--sql) cannot target "
            "each tenant's schema or database"
        )
    attributes = context.config.attributes
    connection = attributes.get(CONNECTION_KEY)
    configure_options = {
        **configure_options,
        "include_name": _without_library_tables(configure_options.get("include_name")),
    }
    if not isinstance(connection, Connection):
        from fastapi_tenancy.migrations.autogenerate import autogenerate_revision, autogenerating

        if autogenerating():
            autogenerate_revision(target_metadata, configure_options)
            return
        raise MigrationError(
            "env.py found no connection from fastapi-tenancy: run migrations with "
            "fastapi_tenancy.migrations.upgrade(tenancy, alembic_config) or `fastapi-tenancy "
            "migrate upgrade` (`alembic revision --autogenerate` works on its own)"
        )
    schema = attributes.get(SCHEMA_KEY)
    options: dict[str, Any] = {"target_metadata": target_metadata, **configure_options}
    options["connection"] = connection
    if schema is not None:
        schema = checked_storage_name(schema)
        _search_tenant_schema(connection, schema)
        options["version_table_schema"] = schema
    context.configure(**options)
    with context.begin_transaction():
        context.run_migrations()


IncludeName = Callable[[str | None, str, Any], bool]


def _without_library_tables(include_name: IncludeName | None) -> IncludeName:
    """An ``include_name`` hook that also leaves out the library's ``tenancy_*`` tables.

    Under row isolation the app's tables share the central database with the library's, which
    have a history of their own (`fastapi_tenancy.migrations.central`): autogenerate must never
    offer to drop them.
    """

    def include(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table" and name is not None and name.startswith(LIBRARY_TABLE_PREFIX):
            return False
        return include_name(name, type_, parent_names) if include_name is not None else True

    return include


def _search_tenant_schema(connection: Connection, schema: str) -> None:
    # Alembic's operations (op.create_table, op.add_column, ...) name tables without a schema, and
    # its DDL ignores schema_translate_map, so unqualified names must resolve to the tenant's
    # schema through the search path. is_local=true keeps it to the runner's transaction: the
    # pooled connection never carries a tenant afterwards.
    connection.execute(
        text("SELECT set_config('search_path', :path, true)"), {"path": f'"{schema}"'}
    )

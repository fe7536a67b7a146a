"""Alembic's env.py for the central tables; run by `fastapi_tenancy.migrations.central` only.

The runner hands over a connection inside its locked transaction in
``context.config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from fastapi_tenancy.migrations.central import VERSION_TABLE, central_metadata, compare_options
from fastapi_tenancy.migrations.errors import MigrationError

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection) or context.is_offline_mode():
    raise MigrationError(
        "the central tables are migrated by `fastapi-tenancy migrate central` (or at start), "
        "not by the alembic command"
    )
context.configure(
    connection=connection,
    target_metadata=central_metadata(),
    version_table=VERSION_TABLE,
    **compare_options(),
)
with context.begin_transaction():
    context.run_migrations()

"""Which tables hold tenant data: the configured metadata, or every `TenantScoped` model's."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData, Table, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.sql.util import sort_tables

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.scoped import tenant_scoped_classes

__all__ = ["LIBRARY_TABLE_PREFIX", "TenantTables", "load_metadata"]

# The library's own tables (tenant records, the audit trail) outlive the tenants they name.
LIBRARY_TABLE_PREFIX = "tenancy_"
TENANT_COLUMN = "tenant_id"


def load_metadata(spec: str | MetaData) -> MetaData:
    """Resolve ``"package.module:Base.metadata"`` (or a MetaData) to the MetaData it names."""
    if isinstance(spec, MetaData):
        return spec
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"tenant_metadata {spec!r} must look like 'package.module:Base.metadata'"
        )
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"tenant_metadata {spec!r} cannot be imported: {exc}") from exc
    if not isinstance(target, MetaData):
        raise ConfigurationError(
            f"tenant_metadata {spec!r} is a {type(target).__name__}, not MetaData"
        )
    return target


class TenantTables:
    """The tables isolation provisions and purges.

    With an explicit metadata (``TENANCY_TENANT_METADATA``) that is the whole set; without one it
    is the metadata of every mapped `TenantScoped` model, looked up when first needed so models
    imported after start-up still count.
    """

    def __init__(self, metadata: str | MetaData | None = None) -> None:
        self._spec = metadata
        self._metadata: MetaData | None = None

    def metadatas(self) -> list[MetaData]:
        if self._spec is not None:
            if self._metadata is None:
                self._metadata = load_metadata(self._spec)
            return [self._metadata]
        found: list[MetaData] = []
        for cls in tenant_scoped_classes():
            metadata = cls.__table__.metadata
            if all(metadata is not seen for seen in found):
                found.append(metadata)
        return found

    def scoped_tables_children_first(self) -> list[Table]:
        """Tables with a ``tenant_id`` column, ordered so foreign keys never block a DELETE."""
        tables = [table for metadata in self.metadatas() for table in metadata.tables.values()]
        ordered = sort_tables(tables)
        return [table for table in reversed(ordered) if "tenant_id" in table.c]

    def existing_scoped_tables(self, connection: Connection) -> list[Table]:
        """Every table in the database with a ``tenant_id`` column, children first.

        Found by reflecting the database, not only the metadata: tables that Alembic owns (and
        no metadata names), or that were added after start-up, hold tenant rows too. The
        library's own ``tenancy_*`` tables are left out. Schemas searched: the connection's
        default one and any a configured table names.
        """
        inspector = inspect(connection)
        schemas: set[str | None] = {None}
        schemas.update(t.schema for m in self.metadatas() for t in m.tables.values() if t.schema)
        reflected = MetaData()
        for schema in schemas:
            columns = inspector.get_multi_columns(schema=schema)
            names = [
                name
                for (_, name), found in columns.items()
                if any(column["name"] == TENANT_COLUMN for column in found)
                and not name.startswith(LIBRARY_TABLE_PREFIX)
            ]
            if names:
                reflected.reflect(connection, schema=schema, only=names)
        ordered = sort_tables(reflected.tables.values())
        return [
            table
            for table in reversed(ordered)
            if TENANT_COLUMN in table.c and not table.name.startswith(LIBRARY_TABLE_PREFIX)
        ]

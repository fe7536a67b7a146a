"""A tenant's rows as JSON lines: the portable form of row-isolation backups and strategy moves.

`pg_dump` cannot cut one tenant's rows out of shared tables, and a copy between strategies (rows in
shared tables -> a schema of its own -> a database of its own) or between backends needs a form
that no server dialect owns. Each table is one JSON-lines member: a header line naming the table
and its columns, then one JSON array per row. Values JSON has no type for are tagged
(``{"$datetime": "..."}``, ``{"$timedelta": [days, seconds, microseconds]}``,
``{"$decimal": "..."}``, ``{"$bytes": "<base64>"}``, ...), so a row reads back as the same Python
values whatever the column types on the other side.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, func, inspect, select, text
from sqlalchemy.engine import Connection

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.tables import LIBRARY_TABLE_PREFIX, TENANT_COLUMN

__all__ = [
    "count_rows",
    "decode",
    "dump_tables",
    "encode",
    "load_tables",
    "storage_tables",
]

_BATCH = 1000
# Migration state is the destination's own: its migrations made its tables.
_SKIPPED = frozenset({"alembic_version"})


def encode(value: Any) -> Any:
    """``value`` as JSON can hold it, tagged when JSON has no type of its own for it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        # Exact parts: total_seconds() is a float, which loses microseconds of long spans.
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, dict | list):  # a JSON column's value, kept apart from the tags
        return {"$json": value}
    raise TypeError(f"cannot export a {type(value).__name__} value")


def decode(value: Any) -> Any:
    """The Python value `encode` turned into ``value``."""
    if not isinstance(value, dict):
        return value
    ((tag, raw),) = value.items()
    match tag:
        case "$datetime":
            return dt.datetime.fromisoformat(raw)
        case "$date":
            return dt.date.fromisoformat(raw)
        case "$time":
            return dt.time.fromisoformat(raw)
        case "$timedelta":
            days, seconds, microseconds = raw
            return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)
        case "$decimal":
            return Decimal(raw)
        case "$bytes":
            return base64.b64decode(raw)
        case "$uuid":
            return uuid.UUID(raw)
        case "$json":
            return raw
    raise ValueError(f"unknown value tag {tag!r} in a tenant export")


def storage_tables(
    connection: Connection, *, schema: str | None = None, scoped_only: bool = False
) -> list[Table]:
    """The tables in ``schema`` (default: the connection's), parents first.

    ``scoped_only`` keeps the tables with a ``tenant_id`` column (row isolation: the shared ones
    hold every tenant's rows). The library's own ``tenancy_*`` tables and ``alembic_version``
    are never tenant data.
    """
    inspector = inspect(connection)
    names = [
        name
        for name in inspector.get_table_names(schema=schema)
        if not name.startswith(LIBRARY_TABLE_PREFIX) and name not in _SKIPPED
    ]
    if scoped_only:
        columns = inspector.get_multi_columns(schema=schema, filter_names=names)
        names = [
            name
            for (_, name), found in columns.items()
            if any(column["name"] == TENANT_COLUMN for column in found)
        ]
    reflected = MetaData()
    if names:
        reflected.reflect(connection, schema=schema, only=names)
    return list(reflected.sorted_tables)


def _where(table: Table, tenant_id: str | None) -> Any:
    statement = select(table)
    if tenant_id is not None:
        statement = statement.where(table.c[TENANT_COLUMN] == tenant_id)
    return statement


def count_rows(
    connection: Connection, tables: list[Table], tenant_id: str | None
) -> dict[str, int]:
    """Rows per table name (all of them, or ``tenant_id``'s), for verifying a copy."""
    counts = {}
    for table in tables:
        statement = select(func.count()).select_from(table)
        if tenant_id is not None:
            statement = statement.where(table.c[TENANT_COLUMN] == tenant_id)
        counts[table.name] = int(connection.execute(statement).scalar_one())
    return counts


def dump_tables(
    connection: Connection, tables: list[Table], folder: Path, *, tenant_id: str | None
) -> dict[str, int]:
    """Write each table's rows (``tenant_id``'s only, when given) to ``folder``; rows per table.

    Rows are streamed (server-side cursor where the driver has one), so a big table never sits
    in memory whole.
    """
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for position, table in enumerate(tables):
        columns = [column.name for column in table.columns]
        path = folder / f"{position:04d}-{table.name}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            out.write(json.dumps({"table": table.name, "columns": columns}) + "\n")
            ordered = _where(table, tenant_id).order_by(*table.primary_key.columns)
            result = connection.execution_options(stream_results=True).execute(ordered)
            count = 0
            for row in result:
                out.write(json.dumps([encode(value) for value in row], ensure_ascii=False))
                out.write("\n")
                count += 1
        counts[table.name] = count
    return counts


def _members(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl"))


def _read(path: Path) -> tuple[str, list[str]]:
    with path.open(encoding="utf-8") as handle:
        header = json.loads(handle.readline())
    return header["table"], header["columns"]


def _rows(path: Path) -> Iterator[list[Any]]:
    with path.open(encoding="utf-8") as handle:
        handle.readline()  # the header
        for line in handle:
            if line.strip():
                yield [decode(value) for value in json.loads(line)]


def load_tables(
    connection: Connection,
    folder: Path,
    *,
    schema: str | None = None,
    tenant_id: tuple[str, str] | None = None,
    skip_unscoped: bool = False,
) -> dict[str, int]:
    """Insert the rows `dump_tables` wrote into the tables of ``schema``; rows per table.

    ``tenant_id`` is ``(old, new)``: the ``tenant_id`` of every row becomes ``new`` (a restore
    under a new identifier). ``skip_unscoped`` leaves out tables without a ``tenant_id`` column
    (a destination under row isolation shares those between all tenants). Every table must exist
    at the destination: rows are never silently dropped. On PostgreSQL each table's sequences are
    moved past the rows inserted, so the next insert does not collide with them.
    """
    reflected = MetaData()
    counts: dict[str, int] = {}
    for path in _members(folder):
        name, columns = _read(path)
        if name not in reflected.tables and f"{schema}.{name}" not in reflected.tables:
            try:
                reflected.reflect(connection, schema=schema, only=[name])
            except Exception as exc:
                raise ConfigurationError(
                    f"the destination has no table {name!r} for the exported rows: create the "
                    "tenant's tables there first (the same models or migrations)"
                ) from exc
        table = reflected.tables[f"{schema}.{name}" if schema else name]
        if skip_unscoped and TENANT_COLUMN not in table.c:
            continue
        missing = [column for column in columns if column not in table.c]
        if missing:
            raise ConfigurationError(
                f"table {name!r} at the destination lacks the exported columns {missing}"
            )
        position = columns.index(TENANT_COLUMN) if TENANT_COLUMN in columns else -1
        count = 0
        batch: list[dict[str, Any]] = []
        for row in _rows(path):
            if tenant_id is not None and position >= 0 and row[position] == tenant_id[0]:
                row[position] = tenant_id[1]
            batch.append(dict(zip(columns, row, strict=True)))
            if len(batch) >= _BATCH:
                connection.execute(table.insert(), batch)
                count += len(batch)
                batch = []
        if batch:
            connection.execute(table.insert(), batch)
            count += len(batch)
        counts[name] = count
        if connection.dialect.name == "postgresql":
            _advance_sequences(connection, table)
    return counts


def _advance_sequences(connection: Connection, table: Table) -> None:
    qualified = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    for column in table.columns:
        sequence = connection.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": qualified, "column": column.name},
        ).scalar_one()
        if sequence is None:
            continue
        # The highest value in the whole table (other tenants' too, in a shared one).
        connection.execute(
            text(
                f'SELECT setval(:sequence, m) FROM (SELECT max("{column.name}") AS m '
                f"FROM {qualified}) AS highest WHERE m IS NOT NULL"
            ),
            {"sequence": sequence},
        )

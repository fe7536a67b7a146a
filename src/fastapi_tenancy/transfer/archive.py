"""The backup file: a gzipped tar of ``manifest.json`` and the tenant's data.

* ``manifest.json``: format and version, the tenant's record (never its database URL: that names
  a server, and may carry a password), the isolation strategy and backend it came from, which kind
  of data follows, and the rows per table at the moment of the dump.
* ``data.sql`` (kinds ``postgres-sql`` and ``mariadb-sql``): the ``pg_dump`` / ``mariadb-dump``
  script of the tenant's schema or database;
* ``rows/NNNN-<table>.jsonl`` (kind ``rows``): the tenant's rows, table by table, parents first
  (`fastapi_tenancy.transfer.rows`).

The file is written under a temporary name and renamed when complete, so a backup interrupted
half way never leaves a file that looks whole.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import Tenant, TenantStatus

__all__ = ["FORMAT", "Kind", "Manifest", "read_archive", "write_archive"]

FORMAT = "fastapi-tenancy-tenant-backup"
VERSION = 1
Kind = Literal["rows", "postgres-sql", "mariadb-sql"]
MANIFEST = "manifest.json"
SQL_MEMBER = "data.sql"
ROWS_FOLDER = "rows"


@dataclass
class Manifest:
    """What a backup holds, read before any of its data is."""

    kind: Kind
    strategy: str
    backend: str
    tenant: dict[str, Any]
    tables: dict[str, int] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def identifier(self) -> str:
        return str(self.tenant["identifier"])

    @property
    def storage_name(self) -> str | None:
        name = self.tenant.get("storage_name")
        return None if name is None else str(name)

    def record(self) -> Tenant:
        """The tenant as it was backed up (status aside: a restore decides that)."""
        return Tenant.model_validate(self.tenant)

    @classmethod
    def of(
        cls, tenant: Tenant, *, kind: Kind, strategy: str, backend: str, tables: dict[str, int]
    ) -> Manifest:
        record = tenant.model_dump(mode="json", exclude={"database_url", "provisioning_attempts"})
        if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
            record["status"] = TenantStatus.ACTIVE.value
        return cls(kind, strategy, backend, record, tables)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "kind": self.kind,
                "strategy": self.strategy,
                "backend": self.backend,
                "tenant": self.tenant,
                "tables": self.tables,
                "created_at": self.created_at,
            },
            indent=2,
        )


def write_archive(output: Path, manifest: Manifest, folder: Path) -> None:
    """Pack ``manifest`` and the data in ``folder`` into ``output``, atomically."""
    (folder / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(folder / MANIFEST, arcname=MANIFEST)
        if (folder / SQL_MEMBER).exists():
            tar.add(folder / SQL_MEMBER, arcname=SQL_MEMBER)
        rows = folder / ROWS_FOLDER
        if rows.exists():
            for path in sorted(rows.iterdir()):
                tar.add(path, arcname=f"{ROWS_FOLDER}/{path.name}")
    os.replace(partial, output)


def read_archive(path: Path, folder: Path) -> Manifest:
    """Unpack the backup at ``path`` into ``folder`` and return its manifest."""
    try:
        with tarfile.open(path, "r:*") as tar:
            # The "data" filter refuses absolute paths, links out of the folder and devices.
            tar.extractall(folder, filter="data")
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, tarfile.TarError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"{path} is not a tenant backup: {exc}") from None
    if raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise ConfigurationError(
            f"{path} is not a tenant backup of version {VERSION} (format {raw.get('format')!r}, "
            f"version {raw.get('version')!r})"
        )
    return Manifest(
        kind=raw["kind"],
        strategy=raw["strategy"],
        backend=raw["backend"],
        tenant=raw["tenant"],
        tables={str(k): int(v) for k, v in raw.get("tables", {}).items()},
        created_at=raw["created_at"],
    )

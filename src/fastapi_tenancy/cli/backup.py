"""``fastapi-tenancy tenants backup`` and ``tenants restore -i``: one tenant to a file and back."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi_tenancy.cli.output import print_error
from fastapi_tenancy.cli.runtime import (
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_command,
    run_with_tenancy,
)
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    from fastapi_tenancy.cli.tenants import identifier

    backup = add_command(
        sub,
        "backup",
        help="write one tenant's record and data to a file",
        description="Back up one tenant: pg_dump of its schema or database on PostgreSQL, "
        "mariadb-dump of its database on MariaDB, its rows as JSON lines under row isolation "
        "(see docs/backup-and-move.md).",
        common=common,
        handler=_backup,
    )
    backup.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    backup.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")

    # `tenants restore IDENTIFIER` brings back a soft-deleted tenant; with -i FILE it restores
    # one from a backup instead, so both kinds of "restore" share the one command.
    restore = sub.choices["restore"]
    restore.description = (
        "Bring a soft-deleted tenant back with its data; or, with -i FILE, restore a tenant from "
        "a file written by 'tenants backup' into this configuration's storage, checking its rows "
        "per table against the backup."
    )
    restore.add_argument(
        "-i", "--input", type=Path, metavar="FILE", help="restore from this backup file"
    )
    restore.add_argument(
        "--as",
        dest="as_identifier",
        type=identifier,
        metavar="IDENTIFIER",
        help="with -i: restore a copy under this new identifier (a new tenant id and storage)",
    )
    undelete = restore.get_default("handler")

    def handler(args: argparse.Namespace) -> int:
        if args.input is not None:
            return _restore(args)
        if args.as_identifier is not None:
            print_error("tenants restore: --as needs -i FILE")
            return EXIT_USAGE
        code: int = undelete(args)
        return code

    restore.set_defaults(handler=handler)


def _backup(args: argparse.Namespace) -> int:
    from fastapi_tenancy.transfer.backup import backup_tenant

    async def backup(tenancy: Tenancy) -> int:
        manifest = await backup_tenant(tenancy, args.identifier, args.output)
        rows = sum(manifest.tables.values())
        print(
            f"backed up tenant {args.identifier} to {args.output} ({manifest.kind}, "
            f"{len(manifest.tables)} tables, {rows} rows)"
        )
        return EXIT_OK

    return run_with_tenancy(args, backup)


def _restore(args: argparse.Namespace) -> int:
    from fastapi_tenancy.transfer.restore import restore_tenant

    async def restore(tenancy: Tenancy) -> int:
        tenant = await restore_tenant(
            tenancy, args.input, args.identifier, as_identifier=args.as_identifier
        )
        print(f"restored tenant {tenant.identifier} ({tenant.status.value}) from {args.input}")
        return EXIT_OK

    return run_with_tenancy(args, restore)

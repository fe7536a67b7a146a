"""``fastapi-tenancy tenants adopt``: give a single-tenant database's rows to a first tenant.

The middle step of docs/adopting.md, between the migration that adds a nullable ``tenant_id``
(`fastapi_tenancy.migrations.ops.add_tenant_column`) and the one that makes it NOT NULL
(``enforce_tenant_column``). The work is `fastapi_tenancy.adoption.adopt_rows`.
"""

from __future__ import annotations

import argparse

from fastapi_tenancy.cli.runtime import (
    EXIT_OK,
    Commands,
    add_command,
    positive_int,
    run_with_tenancy,
)
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    from fastapi_tenancy.adoption import DEFAULT_BATCH_SIZE
    from fastapi_tenancy.cli.tenants import identifier

    adopt = add_command(
        sub,
        "adopt",
        help="give every row without a tenant (tenant_id NULL) to a tenant, creating it if new",
        description="Row isolation: stamp every row whose tenant_id is NULL with this tenant's id, "
        "in batches, parents before children. Creates the tenant if it does not exist. Safe to "
        "run again: an interrupted run resumes, a finished one changes nothing. Refuses, "
        "changing nothing, when a table also holds another tenant's rows. See docs/adopting.md.",
        common=common,
        handler=_adopt,
    )
    adopt.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    adopt.add_argument(
        "--tables",
        nargs="+",
        metavar="TABLE",
        help="only these tables (default: every table with a tenant_id column)",
    )
    adopt.add_argument("--name", help="display name, if the tenant is created")
    adopt.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})",
    )


def _adopt(args: argparse.Namespace) -> int:
    from fastapi_tenancy.adoption import adopt_rows

    async def adopt(tenancy: Tenancy) -> int:
        report = await adopt_rows(
            tenancy,
            args.identifier,
            tables=args.tables,
            name=args.name,
            batch_size=args.batch_size,
        )
        if report.created:
            print(f"created tenant {report.tenant.identifier} ({report.tenant.status.value})")
        for table in report.tables:
            print(f"{table.table}: {table.rows} row(s) adopted")
        print(
            f"adopted {report.rows} row(s) in {len(report.tables)} table(s) into tenant "
            f"{report.tenant.identifier}"
        )
        return EXIT_OK

    return run_with_tenancy(args, adopt)

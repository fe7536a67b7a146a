"""``fastapi-tenancy migrate upgrade``: run Alembic for one, several or all tenants."""

from __future__ import annotations

import argparse
import sys

from fastapi_tenancy.cli.output import print_error, print_json, render_table
from fastapi_tenancy.cli.runtime import (
    EXIT_FAILURE,
    EXIT_OK,
    alembic_config,
    positive_int,
    print_usage,
    run_with_tenancy,
)
from fastapi_tenancy.cli.tenants import identifier
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]

BAR_WIDTH = 30


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    migrate = commands.add_parser(
        "migrate", help="per-tenant database migrations (Alembic)", parents=[common]
    )
    sub = migrate.add_subparsers(title="commands", metavar="COMMAND")
    migrate.set_defaults(handler=lambda _args: print_usage(migrate))
    upgrade = sub.add_parser(
        "upgrade",
        help="upgrade tenants to a revision",
        description="Upgrade tenants with Alembic, a bounded number at a time, each under a "
        "lock; tenants already at the revision are skipped, a failing tenant does not stop "
        "the others. Row isolation migrates the shared tables once.",
        parents=[common],
    )
    chosen = upgrade.add_mutually_exclusive_group()
    chosen.add_argument(
        "--tenant",
        dest="tenants",
        action="append",
        type=identifier,
        metavar="IDENTIFIER",
        help="a tenant to upgrade; repeat for several",
    )
    chosen.add_argument(
        "--all", action="store_true", help="every active or suspended tenant (the default)"
    )
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="tenants worked on at once (default: TENANCY_DATABASE_POOL_SIZE)",
    )
    upgrade.add_argument(
        "--config", default="alembic.ini", metavar="PATH", help="Alembic config file"
    )
    upgrade.add_argument("--json", action="store_true", help="print the report as JSON")
    upgrade.set_defaults(handler=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    try:
        script = alembic_config(args.config, "--config")
    except ConfigurationError as exc:
        print_error(str(exc))
        return EXIT_FAILURE

    from fastapi_tenancy.migrations import TenantMigration, upgrade

    done = 0

    def progress(migration: TenantMigration) -> None:
        nonlocal done
        done += 1
        if not args.json:
            name = migration.identifier or "(shared tables)"
            print(f"\r{_bar(done)} {done} {name}: {migration.outcome}", end="", file=sys.stderr)

    async def run(tenancy: Tenancy) -> int:
        report = await upgrade(
            tenancy,
            script,
            identifiers=args.tenants,
            revision=args.revision,
            concurrency=args.concurrency,
            on_progress=progress,
        )
        rows = [
            (
                m.identifier or "(shared tables)",
                m.outcome,
                m.from_revision or "-",
                m.to_revision or "-",
                f"{m.seconds:.2f}s",
                m.error or "",
            )
            for m in report.migrations
        ]
        if args.json:
            print_json(
                {
                    "ok": report.ok,
                    "upgraded": report.upgraded,
                    "skipped": report.skipped,
                    "failed": report.failed,
                    "tenants": [dict(zip(_HEADERS, row, strict=True)) for row in rows],
                }
            )
        else:
            print(file=sys.stderr)
            print(render_table(_HEADERS, rows))
            print(
                f"{report.upgraded} upgraded, {report.skipped} skipped, {report.failed} failed "
                f"in {report.seconds:.1f}s"
            )
        return EXIT_OK if report.ok else EXIT_FAILURE

    return run_with_tenancy(args, run)


_HEADERS = ("tenant", "outcome", "from", "to", "time", "error")


def _bar(done: int) -> str:
    # The total is not known up front for row isolation; the bar fills by tenants seen.
    filled = min(BAR_WIDTH, done)
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"

"""``fastapi-tenancy migrate``: upgrade, downgrade and inspect tenants with Alembic."""

from __future__ import annotations

import argparse
import sys
from typing import Literal

from fastapi_tenancy import _wiring
from fastapi_tenancy.cli.output import print_error, print_json, render_table
from fastapi_tenancy.cli.runtime import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    add_command,
    add_group,
    alembic_config,
    positive_int,
    run_with_config,
    run_with_tenancy,
)
from fastapi_tenancy.cli.tenants import identifier
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]

BAR_WIDTH = 30


ALL = "all"


def tenant_choice(value: str) -> str:
    """An argparse type for ``-t``: a tenant identifier, or ``all`` for every tenant."""
    return ALL if value == ALL else identifier(value)


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    sub = add_group(
        commands,
        "migrate",
        help="database migrations (Alembic): tenants and central tables",
        description=None,
        common=common,
    )
    upgrade = add_command(
        sub,
        "upgrade",
        help="upgrade tenants to a revision",
        description="Upgrade tenants with Alembic, a bounded number at a time, each under a "
        "lock; tenants already at the revision are skipped, a failing tenant does not stop "
        "the others. Row isolation migrates the shared tables once.",
        common=common,
        handler=_upgrade,
    )
    _tenant_options(upgrade, required=False)
    upgrade.add_argument("--revision", default="head", help="target revision (default: head)")
    upgrade.add_argument(
        "--pending",
        action="store_true",
        help="report only the tenants that were behind the revision (those found at it are "
        "skipped as always, and left out of the report)",
    )
    _run_options(upgrade)

    downgrade = add_command(
        sub,
        "downgrade",
        help="downgrade tenants to a revision",
        description="Downgrade tenants with Alembic, as upgrade does: a bounded number at a time, "
        "each under a lock, tenants already at the revision skipped, a failing tenant recorded "
        "without stopping the others. Say which tenants: -t IDENTIFIER (repeatable) or -t all.",
        common=common,
        handler=_downgrade,
    )
    downgrade.add_argument("revision", help="target revision: an id, base, or relative (-1)")
    _tenant_options(downgrade, required=True)
    _run_options(downgrade)

    status = add_command(
        sub,
        "status",
        help="each tenant's revision, and which are behind head",
        description="Read each tenant's Alembic revision (no lock, no migration) and compare it "
        "with the script's heads. Exit code 1 with --pending when some tenant is behind.",
        common=common,
        handler=_status,
    )
    _tenant_options(status, required=False)
    status.add_argument("--pending", action="store_true", help="list only the tenants behind head")
    status.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="tenant databases read at once (default: TENANCY_DATABASE_POOL_SIZE)",
    )
    _config_option(status)
    status.add_argument("--json", action="store_true", help="print the list as JSON")

    central = add_command(
        sub,
        "central",
        help="upgrade the library's own tables in the central database",
        description="Bring the central tables (tenants, domains, audit) to this release's "
        "revision of their own Alembic history, under a lock; safe to run at any time and from "
        "several hosts at once. Start does the same unless TENANCY_CENTRAL_MIGRATIONS=check.",
        common=common,
        handler=_central,
    )
    action = central.add_mutually_exclusive_group()
    action.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if the tables are not at this release's revision",
    )
    action.add_argument(
        "--downgrade",
        metavar="REV",
        help="take the tables back to REV (an id, or -1), to run an older release",
    )
    central.add_argument("--json", action="store_true", help="print the result as JSON")


def _tenant_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    chosen = parser.add_mutually_exclusive_group(required=required)
    chosen.add_argument(
        "-t",
        "--tenant",
        dest="tenants",
        action="append",
        type=tenant_choice,
        metavar="IDENTIFIER",
        help="a tenant; repeat for several; 'all' for every active or suspended tenant",
    )
    chosen.add_argument(
        "--all",
        action="store_true",
        help="every active or suspended tenant" + ("" if required else " (the default)"),
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="alembic.ini", metavar="PATH", help="Alembic config file"
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        metavar="N",
        help="tenants worked on at once (default: TENANCY_DATABASE_POOL_SIZE)",
    )
    _config_option(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _identifiers(args: argparse.Namespace) -> list[str] | None:
    """The tenants ``-t`` named, or ``None`` for every tenant (``-t all``, ``--all``, nothing)."""
    if not args.tenants or ALL in args.tenants:
        return None
    return list(args.tenants)


def _upgrade(args: argparse.Namespace) -> int:
    return _run(args, "upgrade", args.revision, pending_only=args.pending)


def _downgrade(args: argparse.Namespace) -> int:
    return _run(args, "downgrade", args.revision, pending_only=False)


def _run(
    args: argparse.Namespace,
    direction: Literal["upgrade", "downgrade"],
    revision: str,
    *,
    pending_only: bool,
) -> int:
    try:
        script = alembic_config(args.config, "--config")
    except ConfigurationError as exc:
        print_error(str(exc))
        return EXIT_FAILURE

    from fastapi_tenancy.migrations import TenantMigration, downgrade, upgrade

    done = 0

    def progress(migration: TenantMigration) -> None:
        nonlocal done
        done += 1
        if not args.json:
            name = migration.identifier or "(shared tables)"
            print(f"\r{_bar(done)} {done} {name}: {migration.outcome}", end="", file=sys.stderr)

    async def run(tenancy: Tenancy) -> int:
        if direction == "upgrade":
            report = await upgrade(
                tenancy,
                script,
                identifiers=_identifiers(args),
                revision=revision,
                concurrency=args.concurrency,
                on_progress=progress,
            )
        else:
            report = await downgrade(
                tenancy,
                script,
                revision,
                identifiers=_identifiers(args),
                concurrency=args.concurrency,
                on_progress=progress,
            )
        shown = [m for m in report.migrations if not (pending_only and m.outcome == "skipped")]
        rows = [
            (
                m.identifier or "(shared tables)",
                m.outcome,
                m.from_revision or "-",
                m.to_revision or "-",
                f"{m.seconds:.2f}s",
                m.error or "",
            )
            for m in shown
        ]
        moved = report.upgraded if direction == "upgrade" else report.downgraded
        verb = "upgraded" if direction == "upgrade" else "downgraded"
        if args.json:
            print_json(
                {
                    "ok": report.ok,
                    verb: moved,
                    "skipped": report.skipped,
                    "failed": report.failed,
                    "tenants": [dict(zip(_HEADERS, row, strict=True)) for row in rows],
                }
            )
        else:
            print(file=sys.stderr)
            print(render_table(_HEADERS, rows))
            print(
                f"{moved} {verb}, {report.skipped} skipped, {report.failed} failed "
                f"in {report.seconds:.1f}s"
            )
        return EXIT_OK if report.ok else EXIT_FAILURE

    return run_with_tenancy(args, run)


def _status(args: argparse.Namespace) -> int:
    try:
        script = alembic_config(args.config, "--config")
    except ConfigurationError as exc:
        print_error(str(exc))
        return EXIT_FAILURE

    from fastapi_tenancy.migrations import status

    async def run(tenancy: Tenancy) -> int:
        found = await status(
            tenancy, script, identifiers=_identifiers(args), concurrency=args.concurrency
        )
        listed = [entry for entry in found if entry.pending or not args.pending]
        rows = [
            (
                entry.identifier or "(shared tables)",
                entry.revision or "-",
                "behind" if entry.pending else "head",
                entry.error or "",
            )
            for entry in listed
        ]
        pending = sum(1 for entry in found if entry.pending)
        if args.json:
            print_json(
                {
                    "pending": pending,
                    "tenants": [dict(zip(_STATUS_HEADERS, row, strict=True)) for row in rows],
                }
            )
        else:
            print(render_table(_STATUS_HEADERS, rows))
            print(f"{pending} of {len(found)} behind head")
        return EXIT_FAILURE if args.pending and pending else EXIT_OK

    return run_with_tenancy(args, run)


def _central(args: argparse.Namespace) -> int:
    async def run(config: TenancyConfig) -> int:
        from fastapi_tenancy.migrations.central import (
            central_head,
            central_revision,
            downgrade_central,
            upgrade_central,
        )

        engine = _wiring.central_engine(config, pool_size=1, max_overflow=0, echo=False)
        try:
            if args.check:
                found = await central_revision(engine)
                current = found == central_head()
                result = {"revision": found, "head": central_head(), "current": current}
                if args.json:
                    print_json(result)
                else:
                    state = "at head" if current else f"behind (head is {central_head()})"
                    print(f"central tables: revision {found or 'none'}, {state}")
                return EXIT_OK if current else EXIT_FAILURE
            if args.downgrade is not None:
                done = await downgrade_central(engine, args.downgrade)
            else:
                done = await upgrade_central(engine)
        finally:
            await engine.dispose()
        if args.json:
            print_json(
                {
                    "outcome": done.outcome,
                    "from": done.from_revision,
                    "to": done.to_revision,
                    "seconds": round(done.seconds, 3),
                }
            )
        else:
            print(
                f"central tables {done.outcome}: {done.from_revision or 'none'} -> "
                f"{done.to_revision or 'none'} in {done.seconds:.2f}s"
            )
        return EXIT_OK

    return run_with_config(args, run)


_HEADERS = ("tenant", "outcome", "from", "to", "time", "error")
_STATUS_HEADERS = ("tenant", "revision", "state", "error")


def _bar(done: int) -> str:
    # The total is not known up front for row isolation; the bar fills by tenants seen.
    filled = min(BAR_WIDTH, done)
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"

"""``fastapi-tenancy tenants move``: one tenant to another server, database or strategy."""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack

from fastapi_tenancy.cli.runtime import (
    EXIT_OK,
    Commands,
    add_command,
    load_config,
    run_with_tenancy,
)
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]


def register(sub: Commands, common: argparse.ArgumentParser) -> None:
    from fastapi_tenancy.cli.tenants import identifier

    move = add_command(
        sub,
        "move",
        help="move a tenant's data to another database or isolation strategy",
        description="Move one tenant while every other tenant is served: freeze it (503 with "
        "Retry-After), fence its source tables, copy, verify rows per table, switch its record, "
        "invalidate it everywhere. The old copy is kept (fenced) until --drop-source. Run the "
        "same command again to continue an interrupted move, or with --rollback to undo it "
        "(see docs/backup-and-move.md).",
        common=common,
        handler=_move,
    )
    move.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    where = move.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to",
        metavar="SERVER",
        help="schema or database isolation: a server of TENANCY_DATABASE_SERVERS ('default': "
        "the central database or database_url_template), which must have room",
    )
    where.add_argument(
        "--to-url",
        metavar="URL",
        help="database isolation: the tenant's new database (on any server), created by the "
        "move; kept on the record as the tenant's own URL (never printed)",
    )
    where.add_argument(
        "--to-strategy",
        choices=("row", "schema", "database"),
        help="the isolation strategy the tenant moves to, in the same central database",
    )
    move.add_argument(
        "--drop-source", action="store_true", help="drop the old copy once the move is done"
    )
    move.add_argument(
        "--rollback", action="store_true", help="undo a move left unfinished by an interruption"
    )


def _move(args: argparse.Namespace) -> int:
    from fastapi_tenancy.transfer.move import (
        Target,
        move_tenant,
        rollback_move,
        server_target,
        url_target,
    )

    async def move(tenancy: Tenancy) -> int:
        async with AsyncExitStack() as stack:
            if args.to is not None:
                target = await server_target(tenancy, args.to)
            elif args.to_url is not None:
                target = url_target(tenancy, args.to_url)
            else:
                config = load_config(
                    getattr(args, "database_url", None), isolation_strategy=args.to_strategy
                )
                other = await stack.enter_async_context(Tenancy(config))
                target = Target(other, f"{args.to_strategy} isolation")
            if args.rollback:
                tenant = await rollback_move(tenancy, args.identifier, target)
                print(f"rolled back the move of tenant {tenant.identifier} ({tenant.status.value})")
                return EXIT_OK
            tenant = await move_tenant(
                tenancy,
                args.identifier,
                target,
                drop_source=args.drop_source,
                progress=lambda step: print(f"{args.identifier}: {step}", flush=True),
            )
            print(f"moved tenant {tenant.identifier} to {target.label} ({tenant.status.value})")
            return EXIT_OK

    return run_with_tenancy(args, move, secrets=[args.to_url])

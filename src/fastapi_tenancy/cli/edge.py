"""``fastapi-tenancy edge sync``: reconcile the tenant routers in Traefik's Redis provider."""

from __future__ import annotations

import argparse
import sys

from fastapi_tenancy.cli.runtime import (
    EXIT_OK,
    Commands,
    add_command,
    add_group,
    run_with_tenancy,
)
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    sub = add_group(
        commands,
        "edge",
        help="publish the tenants' routes to Traefik (Redis provider)",
        description="Keep Traefik's Redis provider in step with the tenants (edge_* settings).",
        common=common,
    )
    sync = add_command(
        sub,
        "sync",
        help="reconcile every tenant router with the central database",
        description="Write a router for every active tenant and remove the routers of every "
        "other one, under edge_root_key and edge_router_prefix only.",
        common=common,
        handler=_sync,
    )
    sync.add_argument(
        "--dry-run", action="store_true", help="print the keys that would change; change nothing"
    )


def _sync(args: argparse.Namespace) -> int:
    async def sync(tenancy: Tenancy) -> int:
        from fastapi_tenancy import _wiring

        edge = _wiring.traefik_edge(tenancy.config)
        try:
            plan = await edge.sync(tenancy, dry_run=args.dry_run)
        finally:
            await edge.close()
        for line in plan.lines():
            print(line)
        verb = "would write" if args.dry_run else "wrote"
        routers = sum(1 for key in plan.desired if key.endswith("/rule"))
        print(
            f"{verb} {len(plan.write)} keys and {'would remove' if args.dry_run else 'removed'} "
            f"{len(plan.remove)}; {routers} tenant routers in all",
            file=sys.stderr,
        )
        return EXIT_OK

    # The command's own runtime neither reconciles at start nor follows events: a dry run must
    # change nothing, and the sync below is the one that counts.
    return run_with_tenancy(args, sync, edge_enabled=False)

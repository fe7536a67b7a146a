"""``fastapi-tenancy tenants ...``: create, list, show, update, retry and move tenants."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi_tenancy.cli import adopt, backup, move
from fastapi_tenancy.cli.output import (
    TABLE_HEADERS,
    print_error,
    print_json,
    render_table,
    tenant_record,
    tenant_rows,
)
from fastapi_tenancy.cli.runtime import (
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_command,
    add_group,
    run_with_tenancy,
)
from fastapi_tenancy.cli.servers import server_rows, servers_summary
from fastapi_tenancy.exceptions import (
    InvalidTenantIdentifier,
    TenantAlreadyExists,
)
from fastapi_tenancy.isolation.placement import counts_by_server
from fastapi_tenancy.models import Tenant, validate_identifier
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["register"]

# command -> (Tenancy method, past tense for the confirmation line, help text); the lifecycle's
# own table of which status each action moves from and to is `lifecycle.TRANSITIONS`.
STATUS_COMMANDS: dict[str, tuple[str, str, str]] = {
    "suspend": ("suspend_tenant", "suspended", "stop serving a tenant (403); its data is kept"),
    "activate": ("activate_tenant", "activated", "serve a suspended tenant again"),
    "delete": (
        "delete_tenant",
        "deleted",
        "soft-delete a tenant (404, data kept; purged at once when soft delete is off)",
    ),
    "restore": ("restore_tenant", "restored", "bring a soft-deleted tenant back with its data"),
}


def identifier(value: str) -> str:
    """An argparse type: malformed identifiers are usage errors, reported before any I/O."""
    try:
        return validate_identifier(value)
    except InvalidTenantIdentifier:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a tenant identifier: use 1-63 lower-case letters, digits and "
            "inner hyphens"
        ) from None


def metadata(value: str) -> dict[str, Any]:
    """An argparse type: a JSON object."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--metadata is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError('--metadata must be a JSON object, e.g. {"plan": "pro"}')
    return parsed


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    sub = add_group(
        commands,
        "tenants",
        help="create, list, show and change tenants",
        description="Manage the tenants in the central database.",
        common=common,
    )

    create = add_command(
        sub,
        "create",
        help="create an active tenant with its storage",
        description="Create a tenant: its record, its schema or database, and its tables.",
        common=common,
        handler=_create,
    )
    create.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    create.add_argument("--name", help="display name (default: the identifier)")
    create.add_argument(
        "--metadata", type=metadata, metavar="JSON", help='a JSON object, e.g. \'{"plan": "pro"}\''
    )
    create.add_argument(
        "--tenant-database-url",
        metavar="URL",
        help="database isolation: an existing database for this tenant instead of one from "
        "database_url_template (stored, never printed)",
    )
    create.add_argument(
        "--server",
        metavar="NAME",
        help="a server of TENANCY_DATABASE_SERVERS to place the tenant on (default: the one with "
        "the most room)",
    )

    listing = add_command(
        sub,
        "list",
        help="list tenants",
        description="List tenants, ordered by identifier.",
        common=common,
        handler=_list,
    )
    listing.add_argument("--all", action="store_true", help="include soft-deleted tenants")
    listing.add_argument("--json", action="store_true", help="print a JSON array")

    show = add_command(
        sub,
        "show",
        help="show one tenant",
        description="Show one tenant's record.",
        common=common,
        handler=_show,
    )
    show.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    show.add_argument("--json", action="store_true", help="print a JSON object")

    for command, (method, done, text) in STATUS_COMMANDS.items():
        parser = add_command(
            sub,
            command,
            help=text,
            description=text.capitalize() + ".",
            common=common,
            handler=_transition(method, done),
        )
        parser.add_argument("identifier", type=identifier, metavar="IDENTIFIER")

    update = add_command(
        sub,
        "update",
        help="rename a tenant or replace its metadata",
        description="Change a tenant's name and/or replace its metadata (e.g. its plan). Every "
        "app process serves the new record at once, as after a status change.",
        common=common,
        handler=_update,
    )
    update.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    update.add_argument("--name", help="new display name")
    update.add_argument(
        "--metadata",
        type=metadata,
        metavar="JSON",
        help='a JSON object that replaces the whole metadata, e.g. \'{"plan": "pro"}\'',
    )

    retry = add_command(
        sub,
        "retry",
        help="provision a failed (or stuck provisioning) tenant again",
        description="Provision a tenant whose provisioning failed, reusing the storage an "
        "earlier attempt made for it. With --no-provision it goes back to pending for a worker.",
        common=common,
        handler=_retry,
    )
    retry.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    retry.add_argument(
        "--no-provision", action="store_true", help="leave the provisioning to a worker"
    )
    retry.add_argument(
        "--stale-after-seconds",
        type=float,
        default=600.0,
        metavar="S",
        help="also retry a tenant left provisioning this long by a process that died",
    )

    purge = add_command(
        sub,
        "purge",
        help="destroy a deleted tenant's data and record (needs --yes)",
        description="Destroy a soft-deleted tenant's data and record. This cannot be undone.",
        common=common,
        handler=_purge,
    )
    purge.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    purge.add_argument("--yes", action="store_true", help="confirm that the data is destroyed")

    _register_domains(sub, common)
    adopt.register(sub, common)
    backup.register(sub, common)
    move.register(sub, common)


def domain(value: str) -> str:
    """An argparse type: a host name, normalised (lower case, IDNA, no port or trailing dot)."""
    from fastapi_tenancy.domains import InvalidDomain, normalise_domain

    try:
        return normalise_domain(value)
    except InvalidDomain as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _register_domains(sub: Commands, common: argparse.ArgumentParser) -> None:
    commands = add_group(
        sub,
        "domains",
        help="add, remove and list a tenant's custom domains",
        description="Serve tenants at host names of their own (acme.com) besides "
        "<identifier>.<domain_suffix>. Each domain belongs to one tenant.",
        common=common,
    )

    add = add_command(
        commands,
        "add",
        help="serve a tenant at a host name too",
        description="Give a host name to a tenant; every app process serves it at once.",
        common=common,
        handler=_add_domain,
    )
    add.add_argument("identifier", type=identifier, metavar="IDENTIFIER")
    add.add_argument("host", type=domain, metavar="HOST")

    remove = add_command(
        commands,
        "remove",
        help="stop serving a host name",
        description="Take a host name from its tenant; every app process stops serving it.",
        common=common,
        handler=_remove_domain,
    )
    remove.add_argument("host", type=domain, metavar="HOST")
    remove.add_argument(
        "--tenant", type=identifier, metavar="IDENTIFIER", help="refuse unless it owns the host"
    )

    listing = add_command(
        commands,
        "list",
        help="list custom domains",
        description="List custom domains and their tenants, ordered by host.",
        common=common,
        handler=_list_domains,
    )
    listing.add_argument("identifier", type=identifier, metavar="IDENTIFIER", nargs="?")
    listing.add_argument("--json", action="store_true", help="print a JSON array")


def _add_domain(args: argparse.Namespace) -> int:
    async def add(tenancy: Tenancy) -> int:
        await tenancy.add_domain(args.identifier, args.host)
        print(f"added domain {args.host} to tenant {args.identifier}")
        return EXIT_OK

    return run_with_tenancy(args, add)


def _remove_domain(args: argparse.Namespace) -> int:
    async def remove(tenancy: Tenancy) -> int:
        await tenancy.remove_domain(args.host, identifier=args.tenant)
        print(f"removed domain {args.host}")
        return EXIT_OK

    return run_with_tenancy(args, remove)


def _list_domains(args: argparse.Namespace) -> int:
    async def list_domains(tenancy: Tenancy) -> int:
        domains = await tenancy.list_domains(args.identifier)
        tenants = await tenancy.list_tenants(include_deleted=True)
        names = {tenant.id: tenant.identifier for tenant in tenants}
        records = [
            {
                "host": d.host,
                "tenant": names.get(d.tenant_id, d.tenant_id),
                "created_at": d.created_at.isoformat(),
            }
            for d in domains
        ]
        if args.json:
            print_json(records)
        else:
            rows = [
                [d.host, names.get(d.tenant_id, d.tenant_id), f"{d.created_at:%Y-%m-%d %H:%M:%S}Z"]
                for d in domains
            ]
            print(render_table(["HOST", "TENANT", "CREATED"], rows))
        return EXIT_OK

    return run_with_tenancy(args, list_domains, **_quiet(args))


def _create(args: argparse.Namespace) -> int:
    async def create(tenancy: Tenancy) -> int:
        try:
            tenant = await tenancy.create_tenant(
                args.identifier,
                name=args.name,
                metadata=args.metadata,
                database_url=args.tenant_database_url,
                server=args.server,
            )
        except TenantAlreadyExists:
            raise TenantAlreadyExists(f"tenant {args.identifier!r} already exists") from None
        where = f" on server {tenant.server}" if tenant.server is not None else ""
        print(f"created tenant {tenant.identifier} ({tenant.status.value}){where}")
        if tenancy.config.tenant_tables == "none":
            print(
                "no tables were created (TENANCY_TENANT_TABLES=none); if Alembic owns them, run "
                f"fastapi-tenancy migrate upgrade --tenant {tenant.identifier}"
            )
        return EXIT_OK

    return run_with_tenancy(args, create, secrets=[args.tenant_database_url])


def _list(args: argparse.Namespace) -> int:
    async def list_tenants(tenancy: Tenancy) -> int:
        tenants = await tenancy.list_tenants(include_deleted=args.all)
        if args.json:
            print_json([tenant_record(tenant) for tenant in tenants])
        elif tenancy.servers or any(tenant.server is not None for tenant in tenants):
            print(render_table((*TABLE_HEADERS, "SERVER"), server_rows(tenants)))
            everyone = await tenancy.list_tenants(include_deleted=True)
            print(servers_summary(tenancy.servers, counts_by_server(everyone)))
        else:
            print(render_table(TABLE_HEADERS, tenant_rows(tenants)))
        return EXIT_OK

    # SQLAlchemy's echo writes to stdout, which must stay parseable for --json.
    return run_with_tenancy(args, list_tenants, **_quiet(args))


def _show(args: argparse.Namespace) -> int:
    async def show(tenancy: Tenancy) -> int:
        tenant = await tenancy.lifecycle.require(args.identifier)
        record = tenant_record(tenant)
        if args.json:
            print_json(record)
        else:
            width = max(len(key) for key in record)
            for key, value in record.items():
                text = json.dumps(value) if key == "metadata" else ("-" if value is None else value)
                print(f"{key.ljust(width)}  {text}")
        return EXIT_OK

    return run_with_tenancy(args, show, **_quiet(args))


def _transition(method: str, done: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        async def move(tenancy: Tenancy) -> int:
            call: Callable[[str], Awaitable[Tenant]] = getattr(tenancy, method)
            tenant = await call(args.identifier)
            print(f"{done} tenant {tenant.identifier} ({tenant.status.value})")
            return EXIT_OK

        return run_with_tenancy(args, move)

    return handler


def _update(args: argparse.Namespace) -> int:
    if args.name is None and args.metadata is None:
        print_error("tenants update: give --name and/or --metadata")
        return EXIT_USAGE

    async def update(tenancy: Tenancy) -> int:
        tenant = await tenancy.update_tenant(
            args.identifier, name=args.name, metadata=args.metadata
        )
        print(f"updated tenant {tenant.identifier} ({tenant.status.value})")
        return EXIT_OK

    return run_with_tenancy(args, update)


def _retry(args: argparse.Namespace) -> int:
    async def retry(tenancy: Tenancy) -> int:
        tenant = await tenancy.retry_tenant(
            args.identifier, provision=not args.no_provision, stale_after=args.stale_after_seconds
        )
        print(f"retried tenant {tenant.identifier} ({tenant.status.value})")
        return EXIT_OK

    return run_with_tenancy(args, retry)


def _purge(args: argparse.Namespace) -> int:
    if not args.yes:
        print_error(
            f"purge destroys the data and record of tenant {args.identifier!r} for good; "
            "repeat with --yes to confirm"
        )
        return EXIT_USAGE

    async def purge(tenancy: Tenancy) -> int:
        await tenancy.purge_tenant(args.identifier)
        print(f"purged tenant {args.identifier}")
        return EXIT_OK

    return run_with_tenancy(args, purge)


def _quiet(args: argparse.Namespace) -> dict[str, Any]:
    return {"database_echo": False} if args.json else {}

"""`upgrade`: bring every tenant's tables (or row isolation's shared tables) to a revision."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from alembic.config import Config
from alembic.script import ScriptDirectory

from fastapi_tenancy.exceptions import ConfigurationError, TenantNotFound
from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.migrations.errors import MigrationError, describe_error, url_passwords
from fastapi_tenancy.migrations.invoke import Direction, run_alembic
from fastapi_tenancy.migrations.locks import migration_transaction
from fastapi_tenancy.migrations.report import MigrationOutcome, MigrationReport, TenantMigration
from fastapi_tenancy.migrations.scan import scan_revisions
from fastapi_tenancy.migrations.targets import connect, target_for
from fastapi_tenancy.migrations.versions import format_revisions, read_revisions, target_revisions
from fastapi_tenancy.models import Tenant, TenantStatus
from fastapi_tenancy.tenancy import Tenancy

__all__ = ["DEFAULT_LOCK_TIMEOUT", "MIGRATED_STATUSES", "downgrade", "migrate_tenant", "upgrade"]

# Tenants whose storage exists: pending, provisioning and failed tenants have no tables yet
# (provisioning creates them), and deleted ones are never touched.
MIGRATED_STATUSES = frozenset({TenantStatus.ACTIVE, TenantStatus.SUSPENDED})
DEFAULT_LOCK_TIMEOUT = 300.0

ProgressCallback = Callable[[TenantMigration], None]


async def upgrade(
    tenancy: Tenancy,
    alembic_config: Config,
    *,
    identifiers: Sequence[str] | None = None,
    revision: str = "head",
    concurrency: int | None = None,
    on_progress: ProgressCallback | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> MigrationReport:
    """Upgrade tenants to ``revision`` with Alembic, and report what happened to each.

    Under row isolation the shared tables are migrated once. Under schema and database isolation
    every active and suspended tenant is (or only ``identifiers``), at most ``concurrency`` at a
    time on each database server (by default ``database_pool_size``, the connections the central
    pool keeps; with ``database_servers`` every server, and the default one, gets that many),
    each in its own transaction under a lock no other runner can hold at the same time. A tenant
    already at ``revision`` is skipped without running Alembic, so re-running is cheap and safe:
    under schema isolation every tenant's revision is read up front in a few queries on each
    server, and a tenant found at the target is skipped without a connection of its own. A
    failing tenant is recorded and the others continue; ``on_progress`` is called as each tenant
    finishes.
    """
    return await _run_fleet(
        tenancy,
        alembic_config,
        "upgrade",
        revision,
        identifiers=identifiers,
        concurrency=concurrency,
        on_progress=on_progress,
        lock_timeout=lock_timeout,
    )


async def downgrade(
    tenancy: Tenancy,
    alembic_config: Config,
    revision: str,
    *,
    identifiers: Sequence[str] | None = None,
    concurrency: int | None = None,
    on_progress: ProgressCallback | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> MigrationReport:
    """Downgrade tenants to ``revision`` (an id, ``"base"`` or a relative ``"-1"``).

    The same run as `upgrade` in the other direction: the same tenants, concurrency, locks and
    report, with ``"downgraded"`` for each tenant moved. A tenant already at ``revision`` is
    skipped; one below it fails with Alembic's reason and the others go on.
    """
    return await _run_fleet(
        tenancy,
        alembic_config,
        "downgrade",
        revision,
        identifiers=identifiers,
        concurrency=concurrency,
        on_progress=on_progress,
        lock_timeout=lock_timeout,
    )


async def _run_fleet(
    tenancy: Tenancy,
    alembic_config: Config,
    direction: Direction,
    revision: str,
    *,
    identifiers: Sequence[str] | None,
    concurrency: int | None,
    on_progress: ProgressCallback | None,
    lock_timeout: float,
) -> MigrationReport:
    if concurrency is None:
        concurrency = tenancy.settings.operations.concurrency
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    started = time.perf_counter()
    script = ScriptDirectory.from_config(alembic_config)
    wanted = target_revisions(script, revision)
    runs = await planned_tenants(tenancy, identifiers)
    runs, scanned = await _skip_current(tenancy, runs, wanted)
    secrets = config_passwords(tenancy)
    # One limit per database server: each server works on up to `concurrency` tenants at once.
    semaphores: dict[str | None, asyncio.Semaphore] = {}

    async def run(planned: Tenant | TenantMigration | None) -> TenantMigration:
        if isinstance(planned, TenantMigration):
            result = planned
        else:
            server = planned.server if planned is not None else None
            semaphore = semaphores.setdefault(server, asyncio.Semaphore(concurrency))
            async with semaphore:
                result = await _migrate(
                    tenancy,
                    alembic_config,
                    planned,
                    revision,
                    wanted,
                    lock_timeout,
                    secrets,
                    scanned.get(planned.id) if planned is not None else None,
                    direction,
                )
        if on_progress is not None:
            on_progress(result)
        return result

    results: list[TenantMigration | asyncio.Task[TenantMigration]] = []
    async with asyncio.TaskGroup() as group:
        for planned in runs:
            if isinstance(planned, TenantMigration) and planned.outcome == "skipped":
                # Already known to be current: reported without a task of its own.
                if on_progress is not None:
                    on_progress(planned)
                results.append(planned)
            else:
                results.append(group.create_task(run(planned)))
    return MigrationReport(
        migrations=tuple(r if isinstance(r, TenantMigration) else r.result() for r in results),
        seconds=time.perf_counter() - started,
    )


async def _skip_current(
    tenancy: Tenancy,
    runs: list[Tenant | TenantMigration | None],
    wanted: frozenset[str] | None,
) -> tuple[list[Tenant | TenantMigration | None], dict[str, frozenset[str]]]:
    """``runs`` with every tenant the bulk scan finds at ``wanted`` replaced by a skip.

    Also returns the revisions the scan read for the others, by tenant id. Only schema
    isolation keeps every tenant's version table on the central server; elsewhere (and for
    targets that depend on the current revision) each tenant is read on its own.
    """
    if wanted is None or tenancy.settings.operations.isolation_strategy != "schema":
        return runs, {}
    started = time.perf_counter()
    scanned = await scan_tenant_revisions(tenancy, runs)
    current = {tenant_id for tenant_id, revisions in scanned.items() if revisions == wanted}
    if not current:
        return runs, scanned
    share = (time.perf_counter() - started) / len(current)
    shown = format_revisions(wanted)
    skipped: list[Tenant | TenantMigration | None] = [
        TenantMigration(
            identifier=planned.identifier,
            outcome="skipped",
            from_revision=shown,
            to_revision=shown,
            error=None,
            seconds=share,
        )
        if isinstance(planned, Tenant) and planned.id in current
        else planned
        for planned in runs
    ]
    return skipped, scanned


async def scan_tenant_revisions(
    tenancy: Tenancy, planned: Iterable[Tenant | TenantMigration | None]
) -> dict[str, frozenset[str]]:
    """Schema isolation: each planned tenant's revisions by id, read in bulk on its server.

    A tenant the scan cannot read is left out (the per-tenant path reads it); so are all the
    tenants of a server of the pool that does not answer.
    """
    names: dict[str | None, dict[str, Tenant]] = {}
    for item in planned:
        if isinstance(item, Tenant) and item.storage_name is not None:
            try:
                name = checked_storage_name(item.storage_name)
            except ConfigurationError:
                continue  # the per-tenant path reports it
            names.setdefault(item.server, {})[name] = item
    scanned: dict[str, frozenset[str]] = {}
    for server, on_server in names.items():
        try:
            found = await _scan_server(tenancy, server, on_server)
        except Exception:
            if server is None:
                raise
            continue  # a server of the pool the scan cannot read: each tenant is tried alone
        scanned.update({on_server[name].id: revisions for name, revisions in found.items()})
    return scanned


async def _scan_server(
    tenancy: Tenancy, server: str | None, names: dict[str, Tenant]
) -> dict[str, frozenset[str]]:
    """`scan_revisions` on the central database (``server`` ``None``) or a server of the pool."""
    if server is None:
        return await scan_revisions(tenancy.engine, names)
    url = tenancy.servers.get(server).url.get_secret_value()
    engine = tenancy.settings.operations.engine(url)
    try:
        return await scan_revisions(engine, names)
    finally:
        await engine.dispose()


async def migrate_tenant(
    tenancy: Tenancy, alembic_config: Config, tenant: Tenant, *, revision: str = "head"
) -> TenantMigration:
    """Upgrade one tenant's storage to ``revision``, whatever its status; raise if it fails.

    For the provisioning worker's ``prepare`` step, where the tenant is still ``provisioning``
    (`upgrade` migrates only active and suspended tenants) and must be at head before it is
    activated. Raises `MigrationError`, with the reason, when the migration fails.
    """
    script = ScriptDirectory.from_config(alembic_config)
    secrets = config_passwords(tenancy)
    result = await _migrate(
        tenancy,
        alembic_config,
        tenant if tenancy.settings.operations.isolation_strategy != "row" else None,
        revision,
        target_revisions(script, revision),
        DEFAULT_LOCK_TIMEOUT,
        secrets,
    )
    if result.outcome == "failed":
        raise MigrationError(f"migrating tenant {tenant.identifier!r} failed: {result.error}")
    return result


def config_passwords(tenancy: Tenancy) -> set[str]:
    """Passwords in the configured URLs, to scrub from error messages."""
    settings = tenancy.settings.operations
    servers = [server.url.get_secret_value() for server in tenancy.servers.servers]
    return url_passwords([settings.database_url, settings.database_url_template, *servers])


async def planned_tenants(
    tenancy: Tenancy, identifiers: Sequence[str] | None
) -> list[Tenant | TenantMigration | None]:
    """What to migrate: tenants, ``None`` for shared tables, or a ready-made failure."""
    if tenancy.settings.operations.isolation_strategy == "row":
        if identifiers is not None:
            raise ConfigurationError(
                "row isolation keeps every tenant in the shared tables: they are migrated once, "
                "so identifiers do not apply"
            )
        return [None]
    if identifiers is None:
        tenants = await tenancy.list_tenants(include_deleted=False)
        return [tenant for tenant in tenants if tenant.status in MIGRATED_STATUSES]
    planned: list[Tenant | TenantMigration | None] = []
    for identifier in dict.fromkeys(identifiers):
        planned.append(await _named(tenancy, identifier))
    return planned


async def _named(tenancy: Tenancy, identifier: str) -> Tenant | TenantMigration:
    try:
        tenant = await tenancy.get_tenant(identifier)
    except TenantNotFound as exc:  # a malformed identifier
        return _refused(identifier, describe_error(exc, ()))
    if tenant is None or tenant.status is TenantStatus.DELETED:
        return _refused(identifier, f"TenantNotFound: no tenant {identifier!r} to migrate")
    if tenant.status not in MIGRATED_STATUSES:
        return _refused(
            identifier,
            f"MigrationError: tenant {identifier!r} is {tenant.status.value}: it has no tables "
            "until it is provisioned",
        )
    return tenant


def _refused(identifier: str, error: str) -> TenantMigration:
    return TenantMigration(
        identifier=identifier,
        outcome="failed",
        from_revision=None,
        to_revision=None,
        error=error,
        seconds=0.0,
    )


async def _migrate(
    tenancy: Tenancy,
    config: Config,
    tenant: Tenant | None,
    revision: str,
    wanted: frozenset[str] | None,
    lock_timeout: float,
    secrets: set[str],
    scanned: frozenset[str] | None = None,
    direction: Direction = "upgrade",
) -> TenantMigration:
    """Migrate one tenant; ``scanned`` is its revision as the bulk scan read it, if it did."""
    started = time.perf_counter()
    identifier = tenant.identifier if tenant is not None else None
    before: frozenset[str] = scanned or frozenset()
    try:
        target = target_for(tenancy, tenant)
        async with connect(tenancy, target) as conn:
            if scanned is None:
                # The cheap check: a tenant already at the target needs neither lock nor Alembic.
                # (The bulk scan has made it for a scanned tenant, found behind.)
                async with conn.begin():
                    before = await read_revisions(conn, target.schema)
                if before == wanted:
                    return _done(identifier, "skipped", before, before, started)
            async with migration_transaction(conn, target.lock_key, wait_seconds=lock_timeout):
                # Another runner may have finished this tenant while we waited for the lock.
                before = await read_revisions(conn, target.schema)
                if before == wanted:
                    return _done(identifier, "skipped", before, before, started)
                await run_alembic(conn, config, target, revision, direction)
                after = await read_revisions(conn, target.schema)
        if after == before:
            return _done(identifier, "skipped", before, after, started)
        moved: MigrationOutcome = "upgraded" if direction == "upgrade" else "downgraded"
        return _done(identifier, moved, before, after, started)
    except Exception as exc:
        if tenant is not None and tenant.database_url is not None:
            secrets = secrets | url_passwords([tenant.database_url.get_secret_value()])
        return TenantMigration(
            identifier=identifier,
            outcome="failed",
            from_revision=format_revisions(before),
            to_revision=None,
            error=describe_error(exc, secrets),
            seconds=time.perf_counter() - started,
        )


def _done(
    identifier: str | None,
    outcome: MigrationOutcome,
    before: frozenset[str],
    after: frozenset[str],
    started: float,
) -> TenantMigration:
    return TenantMigration(
        identifier=identifier,
        outcome=outcome,
        from_revision=format_revisions(before),
        to_revision=format_revisions(after),
        error=None,
        seconds=time.perf_counter() - started,
    )

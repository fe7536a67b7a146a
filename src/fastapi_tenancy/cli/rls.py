"""``fastapi-tenancy rls enable|check``: PostgreSQL row-level security for the tenant tables.

``enable`` runs as the tables' owner (pass its URL with ``--database-url``) and puts every table
of ``tenant_metadata`` with a ``tenant_id`` column under the tenant policy, in one transaction.
``check`` runs as the app's role and reports every reason PostgreSQL would not enforce it. Neither
opens a `Tenancy`: its start-up would create tables, and refuse the owner's role.
"""

from __future__ import annotations

import argparse

from sqlalchemy import Table
from sqlalchemy.engine import make_url

from fastapi_tenancy import _wiring
from fastapi_tenancy.cli.output import print_json
from fastapi_tenancy.cli.runtime import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    add_command,
    add_group,
    run_with_config,
)
from fastapi_tenancy.config import TenancyConfig
from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.isolation.rls import POLICY_NAME, TENANT_SETTING, RlsProblem, find_problems
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.migrations.rls import apply_policies, enable_statements

__all__ = ["register", "rls_tables", "setting_problem"]


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    sub = add_group(
        commands,
        "rls",
        help="PostgreSQL row-level security for row isolation",
        description="Put the tenant tables under PostgreSQL row-level security, or check that "
        "the app's role is confined by it.",
        common=common,
    )
    enable = add_command(
        sub,
        "enable",
        help="enable and force RLS with the tenant policy on every tenant table",
        description="Enable and force row-level security, and (re)create the tenant policy, on "
        "every table of TENANCY_TENANT_METADATA with a tenant_id column, in one transaction. "
        "Run it as the tables' owner (--database-url); safe to repeat.",
        common=common,
        handler=_enable,
    )
    enable.add_argument(
        "--sql", action="store_true", help="print the DDL instead of running it (no connection)"
    )
    check = add_command(
        sub,
        "check",
        help="check that PostgreSQL confines the app's role to one tenant",
        description="Connect as the app does and report every reason PostgreSQL would not "
        "enforce the tenant policies: a superuser or BYPASSRLS role, a role that owns a tenant "
        "table, a table without RLS or policy. Exits 1 if there is any. Reads only.",
        common=common,
        handler=_check,
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")


def rls_tables(config: TenancyConfig) -> list[Table]:
    """The tenant tables of ``config``'s metadata; refuses a config RLS cannot apply to."""
    if config.database_backend != "postgresql":
        raise ConfigurationError(
            f"row-level security needs PostgreSQL; TENANCY_DATABASE_URL is "
            f"{config.database_backend}"
        )
    if config.isolation_strategy != "row":
        raise ConfigurationError(
            "row-level security applies to isolation_strategy 'row'; this config uses "
            f"{config.isolation_strategy!r}"
        )
    if config.tenant_metadata is None:
        raise ConfigurationError(
            "set TENANCY_TENANT_METADATA ('myapp.models:Base.metadata') so the command knows "
            "the tenant tables"
        )
    return TenantTables(config.tenant_metadata).scoped_tables_children_first()


def setting_problem(config: TenancyConfig) -> RlsProblem | None:
    """With the setting off, sessions never name their tenant and the policies hide every row."""
    if config.row_level_security:
        return None
    return RlsProblem(
        f"TENANCY_ROW_LEVEL_SECURITY is off: sessions do not set {TENANT_SETTING}, so tables "
        "under the policy show the app no rows",
        "set TENANCY_ROW_LEVEL_SECURITY=true",
    )


def _enable(args: argparse.Namespace) -> int:
    if args.sql:
        return run_with_config(args, _print_sql)
    return run_with_config(args, _apply)


async def _print_sql(config: TenancyConfig) -> int:
    dialect = make_url("postgresql://").get_dialect()()
    for table in rls_tables(config):
        for statement in enable_statements(dialect, table):
            print(statement + ";")
    return EXIT_OK


async def _apply(config: TenancyConfig) -> int:
    tables = rls_tables(config)
    if not tables:
        raise ConfigurationError(f"{config.tenant_metadata!r} has no table with a tenant_id column")
    engine = _wiring.central_engine(config, echo=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(apply_policies, tables)
    finally:
        await engine.dispose()
    names = ", ".join(table.fullname for table in tables)
    print(f"row-level security enabled and forced with policy {POLICY_NAME} on: {names}")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    async def check(config: TenancyConfig) -> int:
        tables = rls_tables(config)
        engine = _wiring.central_engine(config, echo=False)
        try:
            async with engine.connect() as conn:
                problems = await conn.run_sync(find_problems, tables)
        finally:
            await engine.dispose()
        setting = setting_problem(config)
        if setting is not None:
            problems.insert(0, setting)
        _report(args.json, tables, problems)
        return EXIT_FAILURE if problems else EXIT_OK

    return run_with_config(args, check)


def _report(as_json: bool, tables: list[Table], problems: list[RlsProblem]) -> None:
    names = [table.fullname for table in tables]
    if as_json:
        print_json(
            {
                "ok": not problems,
                "tables": names,
                "problems": [{"message": p.message, "fix": p.fix} for p in problems],
            }
        )
        return
    for problem in problems:
        print(f"fail  {problem}")
    if not problems:
        print(f"ok    PostgreSQL confines this role to one tenant on: {', '.join(names)}")

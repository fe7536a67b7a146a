"""PostgreSQL row-level security: the database's own wall under ``row`` isolation.

The ORM filter of `fastapi_tenancy.isolation.row` cannot see raw SQL or Core statements on
``Table`` objects. Row-level security (RLS) can: PostgreSQL itself adds the tenant condition to
every statement on a tenant table, whoever wrote it. Three pieces make it work:

* **the binding** (`BIND_TENANT`): ``set_config('fastapi_tenancy.tenant_id', :tenant_id, true)``
  at every BEGIN of a tenant session; ``true`` makes it transaction-local, so it ends with the
  transaction and no pooled connection (nor a PgBouncer server connection) ever carries a tenant;
* **the policies** (`fastapi_tenancy.migrations.rls`, DDL run off the request path): on every
  tenant table RLS is enabled and *forced* (so it holds for the table owner too) with one policy
  whose ``USING`` and ``WITH CHECK`` compare ``tenant_id`` with `CURRENT_TENANT`. A missing or
  empty setting compares with NULL: zero rows visible, every insert refused;
* **the check** (`find_problems`, `verify_row_level_security`): PostgreSQL skips RLS for
  superusers and ``BYPASSRLS`` roles, and a table's owner can switch it off, so the app must
  connect as a role that is none of these, and every tenant table must carry the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.engine import Connection, Dialect

from fastapi_tenancy.exceptions import ConfigurationError

__all__ = [
    "BIND_TENANT",
    "CURRENT_TENANT",
    "POLICY_NAME",
    "TENANT_SETTING",
    "RlsProblem",
    "find_problems",
    "require_postgres",
    "table_sql",
    "verify_row_level_security",
]

# A custom setting needs a dotted name. This one and the policy name are written into SQL as they
# are, so they stay plain lower-case identifiers (a test holds them to that).
TENANT_SETTING = "fastapi_tenancy.tenant_id"
POLICY_NAME = "fastapi_tenancy_tenant_isolation"
TENANT_COLUMN = "tenant_id"

# One statement with the same text for every tenant: prepared once per connection, one round trip.
BIND_TENANT = text(f"SELECT set_config('{TENANT_SETTING}', :tenant_id, true)")

# NULLIF: once a transaction-local value has ended, the setting reads as '' (not NULL) for the
# rest of the session; both must match no row.
CURRENT_TENANT = f"NULLIF(current_setting('{TENANT_SETTING}', true), '')"
# The fragment PostgreSQL shows back (pg_get_expr) for a policy that reads the setting.
_SETTING_IN_EXPRESSION = f"current_setting('{TENANT_SETTING}'"

ENABLE_FIX = (
    "run `fastapi-tenancy rls enable --database-url <owner URL>` (or "
    "fastapi_tenancy.migrations.rls.enable_row_level_security() in an Alembic migration) as the "
    "tables' owner"
)
APP_ROLE_FIX = (
    "connect the app (TENANCY_DATABASE_URL) as its own role: CREATE ROLE app LOGIN NOSUPERUSER "
    "NOBYPASSRLS; GRANT SELECT, INSERT, UPDATE, DELETE ON the tenant tables TO app"
)

TableRef = Table | str


@dataclass(frozen=True)
class RlsProblem:
    """One reason row-level security cannot be relied on, and how to fix it."""

    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})"


def require_postgres(dialect: Dialect) -> Dialect:
    if dialect.name != "postgresql":
        raise ConfigurationError(
            f"row-level security exists on PostgreSQL only; this connection is {dialect.name}"
        )
    return dialect


def table_sql(dialect: Dialect, table: TableRef) -> str:
    """The quoted, schema-qualified name of ``table``; a string is one (quoted) identifier."""
    preparer = dialect.identifier_preparer
    if isinstance(table, Table):
        if TENANT_COLUMN not in table.c:
            raise ConfigurationError(
                f"table {table.fullname!r} has no {TENANT_COLUMN} column: row-level security "
                "applies to tenant tables (TenantScoped models) only"
            )
        return preparer.format_table(table)
    if not table or "\x00" in table or len(table.encode()) > 63:
        raise ConfigurationError(f"{table!r} is not a PostgreSQL table name")
    return preparer.quote_identifier(table)


_ROLE_FACTS = text(
    "SELECT current_user AS name, rolsuper AS superuser, rolbypassrls AS bypass "
    "FROM pg_roles WHERE rolname = current_user"
)

_TABLE_FACTS = text(
    """
    SELECT c.relrowsecurity AS enabled,
           c.relforcerowsecurity AS forced,
           pg_get_userbyid(c.relowner) AS owner,
           pg_has_role(current_user, c.relowner, 'MEMBER') AS owns,
           p.polcmd::text AS command,
           p.polpermissive AS permissive,
           pg_get_expr(p.polqual, p.polrelid) AS using_expr,
           pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr,
           ARRAY(
               SELECT o.polname::text FROM pg_policy o
               WHERE o.polrelid = c.oid AND o.polpermissive AND o.polname <> :policy
                 AND (0::oid = ANY(o.polroles) OR EXISTS (
                     SELECT 1 FROM unnest(o.polroles) AS r(oid)
                     WHERE pg_has_role(current_user, r.oid, 'MEMBER')))
               ORDER BY o.polname
           ) AS widening
    FROM pg_class c
    LEFT JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = :policy
    WHERE c.oid = to_regclass(:table)
    """
)


def find_problems(connection: Connection, tables: Sequence[Table]) -> list[RlsProblem]:
    """Every reason row-level security would not confine the role ``connection`` is logged in as.

    Reads the catalogs only. An empty list means: RLS applies to this role on every table.
    """
    dialect = require_postgres(connection.dialect)
    problems: list[RlsProblem] = []
    role = connection.execute(_ROLE_FACTS).one()
    if role.superuser:
        problems.append(
            RlsProblem(
                f"the app connects as {role.name!r}, a superuser: PostgreSQL never applies "
                "row-level security to superusers",
                APP_ROLE_FIX,
            )
        )
    if role.bypass:
        problems.append(
            RlsProblem(
                f"role {role.name!r} has BYPASSRLS: PostgreSQL skips every policy for it",
                f'ALTER ROLE "{role.name}" NOBYPASSRLS, or {APP_ROLE_FIX}',
            )
        )
    if not tables:
        problems.append(
            RlsProblem(
                "no tenant tables are known, so none can be checked",
                "set TENANCY_TENANT_METADATA to the metadata of your TenantScoped models",
            )
        )
    for table in tables:
        problems.extend(_table_problems(connection, dialect, table, role.name))
    return problems


def _table_problems(
    connection: Connection, dialect: Dialect, table: Table, role: str
) -> list[RlsProblem]:
    name = table.fullname
    facts = connection.execute(
        _TABLE_FACTS, {"table": table_sql(dialect, table), "policy": POLICY_NAME}
    ).one_or_none()
    if facts is None:
        return [
            RlsProblem(
                f"tenant table {name!r} does not exist",
                f"create it (run the migrations), then {ENABLE_FIX}",
            )
        ]
    problems = []
    if facts.owns:
        owner = "owns" if facts.owner == role else f"is a member of {facts.owner!r}, which owns"
        problems.append(
            RlsProblem(
                f"role {role!r} {owner} table {name!r}: an owner can switch row-level security off",
                "let another role own the tables and connect the app as a role that is not a "
                f"member of it; {APP_ROLE_FIX}",
            )
        )
    missing = []
    if not facts.enabled:
        missing.append("row-level security is not enabled")
    if not facts.forced:
        missing.append("row-level security is not forced")
    if facts.command is None:
        missing.append(f"policy {POLICY_NAME!r} is missing")
    elif not _is_tenant_policy(facts.command, facts.permissive, facts.using_expr, facts.check_expr):
        missing.append(f"policy {POLICY_NAME!r} does not compare tenant_id with {TENANT_SETTING}")
    if missing:
        problems.append(RlsProblem(f"table {name!r}: {', '.join(missing)}", ENABLE_FIX))
    if facts.widening:
        listed = ", ".join(repr(policy) for policy in facts.widening)
        problems.append(
            RlsProblem(
                f"table {name!r} has other permissive policies that apply to {role!r} "
                f"({listed}): PostgreSQL ORs permissive policies, so they widen what a tenant sees",
                "drop them, make them AS RESTRICTIVE, or grant them TO other roles only",
            )
        )
    return problems


def _is_tenant_policy(
    command: str, permissive: bool, using_expr: str | None, check_expr: str | None
) -> bool:
    return (
        command == "*"
        and permissive
        and all(
            expression is not None
            and _SETTING_IN_EXPRESSION in expression
            and TENANT_COLUMN in expression
            for expression in (using_expr, check_expr)
        )
    )


def verify_row_level_security(connection: Connection, tables: Sequence[Table]) -> None:
    """Raise `ConfigurationError` listing every problem `find_problems` finds, with its fix."""
    problems = find_problems(connection, tables)
    if problems:
        raise ConfigurationError(
            "row_level_security is on, but PostgreSQL would not enforce it: "
            + "; ".join(str(problem) for problem in problems)
        )


# The policy DDL moved to `fastapi_tenancy.migrations.rls`; these names still resolve here for one
# release (loaded on use: that module imports this one).
_MOVED = frozenset(
    {
        "apply_policies",
        "disable_statements",
        "enable_statements",
        "remove_policies",
        "tenant_tables",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from fastapi_tenancy.migrations import rls

    return getattr(rls, name)

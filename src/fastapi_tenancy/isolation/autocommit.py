"""⑤ A tenant session whose binding is transaction-local refuses to run in AUTOCOMMIT.

PostgreSQL's ``search_path`` binding (schema isolation) and row-level security's tenant setting
are set with ``set_config(..., true)`` at BEGIN and last until the transaction ends. In AUTOCOMMIT
every statement is a transaction of its own, so the setting would end with the statement that
made it: the next one would run against ``public`` (schema) or with no tenant (RLS). The session
refuses at its first statement instead, before anything runs (its ``after_begin`` listener in
`fastapi_tenancy.isolation.session` asks `in_autocommit`).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

__all__ = ["AUTOCOMMIT_FIX", "in_autocommit"]

AUTOCOMMIT_FIX = (
    "run tenant statements in a transaction (drop isolation_level='AUTOCOMMIT'); for a statement "
    "that cannot run in one (CREATE INDEX CONCURRENTLY, VACUUM), use the Tenancy engine outside "
    "the tenant session, naming the tenant's schema or tenant_id explicitly"
)


def in_autocommit(connection: Connection) -> bool:
    """Whether statements on ``connection`` commit one by one (no transaction around them)."""
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is None:
        return False
    try:
        return bool(connection.dialect.detect_autocommit_setting(dbapi_connection))
    except NotImplementedError:
        return False

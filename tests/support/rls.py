"""Database roles for the row-level security tests: an owner, an app role and a BYPASSRLS role.

PostgreSQL skips row-level security for superusers, and the test server's default user is one,
so these tests log in as roles they create. Roles are server-wide: each name carries the test
database's name, so parallel runs against other databases never touch each other's roles.
The owner creates the tables and policies; the app and bypass roles may only read and write.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import MetaData, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy.migrations.rls import apply_policies
from fastapi_tenancy.store.sqlalchemy import SQLAlchemyTenantStore
from tests.support.models import Base
from tests.support.services import POSTGRES_URL, require_server, reset_database

_DATABASE = re.sub(r"[^a-z0-9_]", "", (make_url(POSTGRES_URL).database or "test").lower())
OWNER_ROLE = f"tenancy_owner_{_DATABASE}"
APP_ROLE = f"tenancy_app_{_DATABASE}"
BYPASS_ROLE = f"tenancy_bypass_{_DATABASE}"
ROLES = {
    OWNER_ROLE: "NOSUPERUSER NOBYPASSRLS",
    APP_ROLE: "NOSUPERUSER NOBYPASSRLS",
    BYPASS_ROLE: "NOSUPERUSER BYPASSRLS",
}


def url_as(role: str) -> str:
    """The test database's URL, logged in as ``role`` (the server trusts loopback logins)."""
    return make_url(POSTGRES_URL).set(username=role, password=None).render_as_string(False)


@dataclass(frozen=True)
class RlsDatabase:
    superuser_url: str
    owner_url: str
    app_url: str
    bypass_url: str


@asynccontextmanager
async def rls_database(
    *, policies: bool = True, metadata: MetaData = Base.metadata
) -> AsyncIterator[RlsDatabase]:
    """An empty test database with the three roles; the owner has created the test tables.

    ``metadata`` names the tables (default: tests/support/models.py's). With ``policies`` the owner
    has also put the tenant tables under row-level security.
    Everything (tables and roles) is dropped on exit.
    """
    require_server("postgres", POSTGRES_URL, 5432)
    await reset_database(POSTGRES_URL)
    await _drop_roles()
    admin = create_async_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            for role, options in ROLES.items():
                await conn.execute(text(f'CREATE ROLE "{role}" LOGIN {options}'))
            await conn.execute(text(f'GRANT USAGE, CREATE ON SCHEMA public TO "{OWNER_ROLE}"'))
            await conn.execute(
                text(f'GRANT USAGE ON SCHEMA public TO "{APP_ROLE}", "{BYPASS_ROLE}"')
            )
        await create_owned_tables(url_as(OWNER_ROLE), policies=policies, metadata=metadata)
        yield RlsDatabase(
            superuser_url=POSTGRES_URL,
            owner_url=url_as(OWNER_ROLE),
            app_url=url_as(APP_ROLE),
            bypass_url=url_as(BYPASS_ROLE),
        )
    finally:
        await admin.dispose()
        await reset_database(POSTGRES_URL)
        await _drop_roles()


async def create_owned_tables(
    owner_url: str, *, policies: bool, metadata: MetaData = Base.metadata
) -> None:
    """As the owner: the tenants table, the test models' tables, policies, and grants."""
    owner = create_async_engine(owner_url, poolclass=NullPool)
    try:
        await SQLAlchemyTenantStore(owner).initialize()
        async with owner.begin() as conn:
            await conn.run_sync(metadata.create_all)
            if policies:
                await conn.run_sync(apply_policies, metadata)
            for role in (APP_ROLE, BYPASS_ROLE):
                await conn.execute(
                    text(
                        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                        f'TO "{role}"'
                    )
                )
                await conn.execute(
                    text(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
                )
    finally:
        await owner.dispose()


async def _drop_roles() -> None:
    admin = create_async_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        async with admin.begin() as conn:
            for role in ROLES:
                exists = await conn.scalar(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
                )
                if exists:
                    # Privileges and objects in this database; the roles hold nothing elsewhere.
                    await conn.execute(text(f'DROP OWNED BY "{role}" CASCADE'))
                    await conn.execute(text(f'DROP ROLE "{role}"'))
    finally:
        await admin.dispose()

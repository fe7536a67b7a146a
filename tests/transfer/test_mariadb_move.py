"""Database isolation on MariaDB: a tenant moves to another database with mariadb-dump."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Tenancy
from fastapi_tenancy.isolation.unavailable import is_unavailable
from fastapi_tenancy.transfer.move import move_tenant, url_target
from tests.support.backends import database_url_template, isolation_config
from tests.support.services import TEST_STORAGE_PREFIX
from tests.transfer.data import every_row, fill

pytestmark = pytest.mark.mysql


async def insert_directly(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO items (name, tenant_id) VALUES ('x', 'y')"))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["mysql"], indirect=True)
async def test_a_tenant_moves_to_another_mariadb_database(database_url: str) -> None:
    async with Tenancy(isolation_config(("database", database_url))) as tenancy:
        acme = await tenancy.create_tenant("acme")
        await tenancy.create_tenant("globex")
        await fill(tenancy, "acme", "a-")
        await fill(tenancy, "globex", "g-")
        before, neighbour = await every_row(tenancy, "acme"), await every_row(tenancy, "globex")
        destination = make_url(database_url).set(database=f"{TEST_STORAGE_PREFIX}moved_acme")
        target = url_target(tenancy, destination.render_as_string(hide_password=False))

        moved = await move_tenant(tenancy, "acme", target)
        assert await every_row(tenancy, "acme") == before
        assert await every_row(tenancy, "globex") == neighbour
        # The old database is fenced: a write is refused as unavailable (503).
        old = database_url_template(database_url).format(database=acme.storage_name)
        with pytest.raises(DBAPIError) as refused:
            await insert_directly(old)
        assert is_unavailable(refused.value)
        # The new one takes writes (the fence did not come along with the dump).
        await insert_directly(destination.render_as_string(hide_password=False))

        await move_tenant(tenancy, "acme", target, drop_source=True)
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(
                    text("SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"),
                    {"n": moved.storage_name},
                )
        finally:
            await engine.dispose()
        assert found == 0

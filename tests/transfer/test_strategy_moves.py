"""Moving one tenant between strategies on PostgreSQL: row -> schema -> database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from fastapi_tenancy import ServiceUnavailable, Tenancy
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.transfer.move import MOVED_FROM_KEY, Target, move_tenant
from tests.support.backends import isolation_config, schema_exists
from tests.support.models import Item
from tests.transfer.data import every_row, fill

pytestmark = pytest.mark.postgres


async def count_items(tenancy: Tenancy, identifier: str) -> int:
    async with tenancy.session(identifier) as session:
        return int(await session.scalar(select(func.count()).select_from(Item)) or 0)


async def write_item(tenancy: Tenancy, identifier: str, name: str) -> None:
    async with tenancy.session(identifier) as session:
        session.add(Item(name=name))
        await session.commit()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_tenant_moves_from_rows_to_a_schema_to_a_database(database_url: str) -> None:
    row_config = isolation_config(("row", database_url))
    async with (
        Tenancy(row_config) as row,
        Tenancy(isolation_config(("schema", database_url))) as schema,
        Tenancy(isolation_config(("database", database_url))) as database,
    ):
        await row.create_tenant("acme")
        await row.create_tenant("globex")
        await fill(row, "acme", "a-")
        await fill(row, "globex", "g-")
        before = await every_row(row, "acme")
        neighbour = await every_row(row, "globex")

        moved = await move_tenant(row, "acme", Target(schema, "schema isolation"))
        assert moved.status is TenantStatus.ACTIVE
        assert moved.storage_name is not None
        assert moved.metadata[MOVED_FROM_KEY] == {
            "to": "schema isolation",
            "storage_name": None,
            "server": None,
            "database_url": False,
        }
        assert await every_row(schema, "acme") == before
        await write_item(schema, "acme", "in its schema")  # sequences moved past the copied ids

        # The old rows are kept, fenced: a write to them fails as unavailable (503); the
        # neighbour in the same shared tables writes on.
        with pytest.raises(ServiceUnavailable):
            await write_item(row, "acme", "stale")
        await write_item(row, "globex", "g-more")
        assert await count_items(row, "acme") == 8

        # Running the same move again with drop_source drops the old rows, and only them.
        dropped = await move_tenant(
            row, "acme", Target(schema, "schema isolation"), drop_source=True
        )
        assert MOVED_FROM_KEY not in dropped.metadata
        assert await count_items(row, "acme") == 0
        after = await every_row(row, "globex")
        assert set(neighbour) < set(after)
        assert len(after) == len(neighbour) + 1  # its own new item

        # Schema -> database, dropping the schema at once.
        before = await every_row(schema, "acme")
        moved = await move_tenant(
            schema, "acme", Target(database, "database isolation"), drop_source=True
        )
        assert await every_row(database, "acme") == before
        async with schema.engine.connect() as conn:
            assert not await schema_exists(conn, moved.storage_name)

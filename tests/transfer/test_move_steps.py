"""A move interrupted at any step continues when run again, or rolls back cleanly (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fastapi_tenancy import ServiceUnavailable, Tenancy
from fastapi_tenancy.exceptions import InvalidTransition
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.transfer.move import MOVE_KEY, Target, move_tenant, rollback_move
from tests.support.backends import isolation_config, schema_exists
from tests.support.models import Item
from tests.transfer.data import every_row, fill

pytestmark = pytest.mark.postgres


class Interrupted(BaseException):
    """Stands for Ctrl-C or a killed process: not an error the move rolls back on its own."""


def interrupt_at(word: str) -> Callable[[str], None]:
    def progress(step: str) -> None:
        if step.startswith(word):
            raise Interrupted(step)

    return progress


async def write_item(tenancy: Tenancy, identifier: str, name: str) -> None:
    async with tenancy.session(identifier) as session:
        session.add(Item(name=name))
        await session.commit()


@pytest.mark.parametrize("step", ["frozen", "fenced", "copied"])
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_an_interrupted_move_continues_or_rolls_back(database_url: str, step: str) -> None:
    async with (
        Tenancy(isolation_config(("row", database_url))) as rows,
        Tenancy(isolation_config(("schema", database_url))) as schemas,
    ):
        await rows.create_tenant("acme")
        await fill(rows, "acme", "a-")
        before = await every_row(rows, "acme")
        target = Target(schemas, "schema isolation")

        with pytest.raises(Interrupted):
            await move_tenant(rows, "acme", target, progress=interrupt_at(step))
        frozen = await rows.get_tenant("acme")
        assert frozen is not None
        assert frozen.status is TenantStatus.MOVING
        assert frozen.metadata[MOVE_KEY]["to"] == "schema isolation"
        # Another target is refused while this move is unfinished.
        with pytest.raises(InvalidTransition, match="being moved to schema isolation"):
            await move_tenant(rows, "acme", Target(schemas, "elsewhere"))

        # Undo it: served from its rows again, writable (the fence is down), no copy left.
        undone = await rollback_move(rows, "acme", target)
        assert undone.status is TenantStatus.ACTIVE
        assert MOVE_KEY not in undone.metadata
        await write_item(rows, "acme", "after the rollback")
        before = await every_row(rows, "acme")
        name = schemas.isolation.assign_storage(undone).storage_name
        async with rows.engine.connect() as conn:
            assert not await schema_exists(conn, name)

        # Interrupted again at the same step, then run again: it finishes, every row there.
        with pytest.raises(Interrupted):
            await move_tenant(rows, "acme", target, progress=interrupt_at(step))
        moved = await move_tenant(rows, "acme", target)
        assert moved.status is TenantStatus.ACTIVE
        assert await every_row(schemas, "acme") == before
        with pytest.raises(ServiceUnavailable):  # the old rows stay fenced
            await write_item(rows, "acme", "stale")

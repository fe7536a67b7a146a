"""Tenant data the transfer tests write, and read back to compare."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from fastapi_tenancy import Tenancy
from tests.support.models import Item, Note

# Text that trips dump formats: COPY's tab, newline and backslash escapes, quotes, non-ASCII, and
# a value that looks like COPY's end-of-data marker.
AWKWARD = ["plain", "tab\there", "new\nline", "back\\slash", "quote ' \" `", "ünï €", "\\.", ""]


async def fill(tenancy: Tenancy, identifier: str, salt: str) -> None:
    async with tenancy.session(identifier) as session:
        for position, name in enumerate(AWKWARD):
            item = Item(name=f"{salt}{name}")
            item.notes = [Note(body=f"{salt}{position}-{n}{name}") for n in range(position % 3)]
            session.add(item)
        await session.commit()


async def every_row(tenancy: Tenancy, identifier: str) -> list[Any]:
    """The tenant's rows as plain values, ids included (restores keep them)."""
    async with tenancy.session(identifier) as session:
        items = (await session.execute(select(Item.id, Item.name).order_by(Item.id))).all()
        notes = (
            await session.execute(select(Note.id, Note.item_id, Note.body).order_by(Note.id))
        ).all()
    return [tuple(row) for row in items] + [tuple(row) for row in notes]

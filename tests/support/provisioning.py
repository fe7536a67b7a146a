"""A process that creates one tenant and is killed part-way: the crash in provisioning tests.

    python -m tests.support.provisioning '<settings as JSON>' <identifier> <stage>

``stage`` is where the process stops to be killed (``SIGKILL``: no ``finally``, no cleanup, its
connections dropped by the kernel):

* ``transaction``: nowhere of its own; the test holds a lock that the one-transaction create
  waits for on the server, mid-transaction, and kills the process and its server session there;
* ``tables``: once the tenant's record is stored and its schema (database) created, right
  before its tables are: it prints ``ready`` and waits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

from fastapi_tenancy import Tenancy, TenancyConfig
from fastapi_tenancy.isolation.schema import SchemaIsolation

# A shared table, and a tenant table pointing at it: creating that foreign key takes a lock on
# the shared table, which a test can hold to stop a provisioning transaction part-way.
METADATA = MetaData()
Table("crash_plans", METADATA, Column("id", Integer, primary_key=True))
Table(
    "crash_orders",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("plan_id", Integer, ForeignKey("crash_plans.id")),
)
METADATA_SPEC = "tests.support.provisioning:METADATA"


async def _stop_before_tables(*_args: Any, **_kwargs: Any) -> None:
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


async def main(settings: dict[str, Any], identifier: str, stage: str) -> None:
    if stage == "tables":
        SchemaIsolation._create_tables = _stop_before_tables  # type: ignore[method-assign]
    async with Tenancy(TenancyConfig(**settings)) as tenancy:
        await tenancy.create_tenant(identifier)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))

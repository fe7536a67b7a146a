"""Smoke test for an installed distribution; run by a fresh virtualenv's interpreter.

    python smoke.py DIRECTORY

Imports the package, serves one tenant request through the middleware on SQLite (in
``DIRECTORY``) that reads a `TenantScoped` table, and checks the typing marker shipped. Exits
non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import fastapi_tenancy
from fastapi_tenancy import (
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    TenantScoped,
    get_current_tenant,
    get_tenant_session,
)
from fastapi_tenancy.testing import run_app


class Base(DeclarativeBase):
    pass


class Note(TenantScoped, Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)


async def main(directory: Path) -> None:
    app = FastAPI()
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{directory / 'smoke.db'}")
    app.add_middleware(TenancyMiddleware, config=config)

    @app.get("/whoami")
    async def whoami(
        tenant: Tenant = Depends(get_current_tenant),
        session: AsyncSession = Depends(get_tenant_session),
    ) -> dict[str, str | int]:
        notes = await session.scalar(select(func.count()).select_from(Note))
        return {"tenant": tenant.identifier, "notes": notes or 0}

    async with run_app(app) as harness:
        await harness.create_tenant("acme")
        async with harness.client("acme") as client:
            response = await client.get("/whoami")
    assert response.status_code == 200, response.text
    assert response.json() == {"tenant": "acme", "notes": 0}, response.json()
    assert resources.files("fastapi_tenancy").joinpath("py.typed").is_file()
    version, origin = fastapi_tenancy.__version__, fastapi_tenancy.__file__
    print(f"smoke ok: fastapi-tenancy-kit {version} from {origin}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

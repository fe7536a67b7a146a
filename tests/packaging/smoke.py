"""Smoke test for an installed distribution; run by a fresh virtualenv's interpreter.

    python smoke.py DIRECTORY

Imports the package, serves one tenant request through the middleware on SQLite (in
``DIRECTORY``), and checks the typing marker shipped. Exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI

import fastapi_tenancy
from fastapi_tenancy import TenancyConfig, TenancyMiddleware, Tenant, get_current_tenant
from fastapi_tenancy.testing import run_app


async def main(directory: Path) -> None:
    app = FastAPI()
    config = TenancyConfig(database_url=f"sqlite+aiosqlite:///{directory / 'smoke.db'}")
    app.add_middleware(TenancyMiddleware, config=config)

    @app.get("/whoami")
    async def whoami(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"tenant": tenant.identifier}

    async with run_app(app) as harness:
        await harness.create_tenant("acme")
        async with harness.client("acme") as client:
            response = await client.get("/whoami")
    assert response.status_code == 200, response.text
    assert response.json() == {"tenant": "acme"}, response.json()
    assert resources.files("fastapi_tenancy").joinpath("py.typed").is_file()
    version, origin = fastapi_tenancy.__version__, fastapi_tenancy.__file__
    print(f"smoke ok: fastapi-tenancy {version} from {origin}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

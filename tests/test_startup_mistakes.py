"""Mistakes a new user makes fail at start with one line that names the setting and the fix.

The server-level checks run a real uvicorn: a server that cannot serve correctly must exit
non-zero before it listens, never start and answer 500 on every path.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

# Makes `import asyncpg` fail in the server process, as on a machine without the postgres extra.
HIDE_ASYNCPG = """
import sys

class _HideAsyncpg:
    def find_spec(self, name, path=None, target=None):
        if name == "asyncpg" or name.startswith("asyncpg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _HideAsyncpg())
"""

APP = """
from fastapi import Depends, FastAPI
from fastapi_tenancy import TenancyConfig, TenancyMiddleware, get_tenant_session

app = FastAPI()
app.add_middleware(TenancyMiddleware{arguments})

@app.get("/items")
async def items(session=Depends(get_tenant_session)):
    return []
"""

SERVER_SECONDS = 60


def server_environment(directory: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("TENANCY_") and not name.startswith("TENANCY_TEST_"))
    }
    env["PYTHONPATH"] = str(directory)
    env.update({f"TENANCY_{name.upper()}": value for name, value in settings.items()})
    return env


async def run_server(directory: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run uvicorn on ``directory/app.py`` until it exits; its exit code and log lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--port",
        "0",
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SERVER_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode().splitlines()


def write_app(directory: Path, arguments: str, *, hide_asyncpg: bool = False) -> None:
    (directory / "app.py").write_text(APP.format(arguments=arguments))
    if hide_asyncpg:
        (directory / "sitecustomize.py").write_text(HIDE_ASYNCPG)


def library_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "fastapi-tenancy" in line or "Traceback" in line]


@pytest.mark.parametrize("arguments", [", config=TenancyConfig()", ""], ids=["config", "env"])
async def test_a_missing_driver_refuses_to_start_with_the_install_command(
    tmp_path: Path, arguments: str
) -> None:
    write_app(tmp_path, arguments, hide_asyncpg=True)
    env = server_environment(tmp_path, database_url="postgresql+asyncpg://app@127.0.0.1:9/app")
    code, lines = await run_server(tmp_path, env)
    assert code != 0, lines
    assert library_lines(lines) == [
        "ERROR:    fastapi-tenancy: postgresql+asyncpg://app@127.0.0.1:9/app needs the asyncpg "
        'driver, which is not installed: pip install "fastapi-tenancy[postgres]"'
    ], lines
    assert not any("Uvicorn running" in line or "unsupported" in line for line in lines), lines


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("postgresql://app@127.0.0.1:9/app", "postgresql:// names no driver; use postgresql+"),
        ("mysql+pymysql://app@127.0.0.1:9/app", "pymysql is a synchronous driver; use mysql+"),
    ],
)
async def test_a_sync_driver_url_refuses_to_start_naming_the_async_one(
    tmp_path: Path, url: str, fix: str
) -> None:
    write_app(tmp_path, "")
    code, lines = await run_server(tmp_path, server_environment(tmp_path, database_url=url))
    assert code != 0, lines
    (line,) = library_lines(lines)
    assert f"TENANCY_DATABASE_URL: {fix}" in line, lines
    assert not any("Uvicorn running" in line for line in lines), lines

"""What the benchmarks share: the PostgreSQL database they run in."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/tenancy_bench"


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("TENANCY_BENCH_POSTGRES_URL", DEFAULT_URL),
        help="PostgreSQL database to run in (created if missing; its bench tables are dropped)",
    )


async def ensure_database(url: str) -> None:
    """Create the benchmark database if the server does not have it yet."""
    parsed = make_url(url)
    admin = create_async_engine(
        parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        )
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    await admin.dispose()


async def drop_schemas(url: str, prefix: str) -> None:
    """Drop every schema whose name starts with ``prefix``.

    One transaction per schema: dropping a thousand in one exhausts the server's lock table.
    """
    pattern = prefix.replace("_", "\\_") + "%"
    engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        names = await conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": pattern}
        )
        for (name,) in names.all():
            await conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    await engine.dispose()


REPOSITORY = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve(app: str, env: dict[str, str], *, wait_seconds: float = 60) -> AsyncIterator[int]:
    """Run ``uvicorn <app> --factory`` (``module:factory``) until the block ends; yields its port.

    The apps of one comparison run as separate processes side by side, so none is measured
    while another warms up in the same interpreter.
    """
    async with serve_process(app, env, wait_seconds=wait_seconds) as (port, _):
        yield port


@asynccontextmanager
async def serve_process(
    app: str, env: dict[str, str], *, wait_seconds: float = 60
) -> AsyncIterator[tuple[int, int]]:
    """`serve`, yielding the port and the server's process id (to read its CPU time)."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "uvicorn", app, "--factory"),
        *("--port", str(port), "--log-level", "warning", "--no-access-log"),
        env=env,
        cwd=REPOSITORY,
    )
    try:
        for _ in range(int(wait_seconds * 10)):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        await process.wait()


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """CPU time (user + system) of process ``pid`` so far, with its reaped children's when
    ``children``; None where ``/proc`` cannot tell (another OS, another machine's process)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[11:15]: utime, stime, cutime, cstime (proc(5), counted from the state field)
    ticks = sum(int(value) for value in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(postmaster: int) -> float | None:
    """CPU time of a local PostgreSQL server: the postmaster, its reaped backends, and the
    backends still running (children of ``postmaster``); None where ``/proc`` cannot tell."""
    total = cpu_seconds(postmaster, children=True)
    if total is None:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: counted with the postmaster's children once reaped
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total

"""The database servers' own dump and load tools, found on ``PATH`` and run without a shell.

``pg_dump``/``psql`` (the PostgreSQL client) and ``mariadb-dump``/``mariadb`` (the MariaDB
client) copy a schema or database faithfully: types, defaults, sequences, indexes, constraints,
triggers and comments that no hand-written copy would keep. Passwords travel in the tools'
environment (``PGPASSWORD``, ``MYSQL_PWD``), never on a command line another user could read,
and every error message is scrubbed of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from fastapi_tenancy._secrets import mask
from fastapi_tenancy.exceptions import ConfigurationError, TenancyError

__all__ = [
    "Tool",
    "ToolFailed",
    "ToolMissing",
    "find_tool",
    "mariadb_command",
    "postgres_command",
    "run_tool",
]

# What provides each tool, for the one message a missing tool gives.
_PACKAGES = {
    "pg_dump": "the PostgreSQL client (apt install postgresql-client)",
    "psql": "the PostgreSQL client (apt install postgresql-client)",
    "mariadb-dump": "the MariaDB client (apt install mariadb-client)",
    "mariadb": "the MariaDB client (apt install mariadb-client)",
}


class ToolMissing(ConfigurationError):
    """A dump or load tool this backup or move needs is not installed."""


class ToolFailed(TenancyError):
    """A dump or load tool exited with an error; the message carries its (scrubbed) stderr."""


@dataclass(frozen=True)
class Tool:
    """A tool invocation: the argument list and the environment additions it needs."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


def find_tool(name: str) -> str:
    """The path of ``name`` on ``PATH``, or `ToolMissing` saying what to install."""
    path = shutil.which(name)
    if path is None:
        what = _PACKAGES.get(name, name)
        raise ToolMissing(f"{name} is not on PATH: install {what} to back up or move tenants")
    return path


def postgres_command(name: str, url: str | URL, *args: str) -> Tool:
    """``name`` (``pg_dump`` or ``psql``) connected to the database ``url`` names."""
    parsed = make_url(url)
    env = {"PGCONNECT_TIMEOUT": "10"}
    secrets = []
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
        secrets.append(str(parsed.password))
    conn = ["--host", parsed.host or "127.0.0.1", "--port", str(parsed.port or 5432)]
    if parsed.username:
        conn += ["--username", parsed.username]
    # --dbname last, so a database name is never read as an option.
    return Tool(
        [find_tool(name), *conn, "--no-password", *args, "--dbname", parsed.database or ""],
        env,
        secrets,
    )


def mariadb_command(name: str, url: str | URL, *args: str) -> Tool:
    """``name`` (``mariadb-dump`` or ``mariadb``) connected to the database ``url`` names."""
    parsed = make_url(url)
    env = {}
    secrets = []
    if parsed.password:
        env["MYSQL_PWD"] = str(parsed.password)
        secrets.append(str(parsed.password))
    conn = [
        "--protocol=TCP",
        f"--host={parsed.host or '127.0.0.1'}",
        f"--port={parsed.port or 3306}",
        f"--user={parsed.username or 'root'}",
    ]
    # --no-defaults first: a user's ~/.my.cnf must not change what is dumped or where it goes.
    return Tool(
        [find_tool(name), "--no-defaults", *conn, *args, parsed.database or ""], env, secrets
    )


async def run_tool(
    tool: Tool,
    *,
    stdin: Path | None = None,
    stdout: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Run ``tool``, reading ``stdin`` from a file and writing ``stdout`` to one; raise on failure.

    The files are streamed by the child process itself: a dump of any size never passes
    through Python's memory.
    """
    env = {**os.environ, **tool.env, **(extra_env or {})}
    with contextlib.ExitStack() as files:
        source = files.enter_context(stdin.open("rb")) if stdin is not None else None
        target = files.enter_context(stdout.open("wb")) if stdout is not None else None
        process = await asyncio.create_subprocess_exec(
            *tool.args,
            stdin=source if source is not None else asyncio.subprocess.DEVNULL,
            stdout=target if target is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            _, err = await process.communicate()
        except BaseException:
            # Cancelled (an interrupted move): the tool must not keep writing behind our back.
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
    if process.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        tail = "; ".join(message[-5:]) or f"exit status {process.returncode}"
        name = Path(tool.args[0]).name
        raise ToolFailed(mask(f"{name} failed: {tail}", tool.secrets))

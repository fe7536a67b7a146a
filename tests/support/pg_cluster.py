"""A second PostgreSQL server for the tests, started from the installed binaries on loopback.

`second_postgres` (session-scoped) runs ``initdb`` and ``pg_ctl`` on a free port in a temporary
folder, as a non-root user (PostgreSQL refuses to run as root: as root the commands run as the
``postgres`` OS user through ``runuser``), with fsync off and trust authentication on loopback
only. It is stopped and its folder removed at the end of the session. Without the binaries the
tests that use it skip, or fail under ``TENANCY_TEST_REQUIRE_SERVICES=1``.

The folder's name carries the suite's storage tag (``tenancy-pg-<tag>-…`` under the temporary
directory; pytest's own base folder is private to its user, which the server's user is not).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.services import REQUIRE_SERVICES, TEST_STORAGE_PREFIX, free_port

__all__ = ["PostgresCluster", "postgres_binaries", "second_postgres"]

SERVER_USER = "postgres"
START_TIMEOUT_SECONDS = 30


def postgres_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else the newest install."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        if found.returncode == 0:
            candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


@dataclass
class PostgresCluster:
    """One PostgreSQL server of our own: ``initdb`` into ``folder``, listening on ``port``."""

    binaries: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", SERVER_USER, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
            "-w", "-t", str(START_TIMEOUT_SECONDS), "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Create database ``name`` on this server; its URL."""

        async def create() -> None:
            engine = create_async_engine(
                self.url(), poolclass=NullPool, isolation_level="AUTOCOMMIT"
            )
            try:
                async with engine.connect() as conn:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
            finally:
                await engine.dispose()

        asyncio.run(create())
        return self.url(name)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.binaries / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{tail}")


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} and TENANCY_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def _server_user_exists() -> bool:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def second_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server besides the suite's, for the whole session."""
    binaries = postgres_binaries()
    if binaries is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) are installed")
        raise AssertionError  # unreachable: skip and fail raise
    if os.geteuid() == 0 and not (_server_user_exists() and shutil.which("runuser")):
        _unavailable(f"running as root without a {SERVER_USER!r} user to run PostgreSQL as")
    tag = TEST_STORAGE_PREFIX.removeprefix("tt_").strip("_")
    folder = Path(tempfile.mkdtemp(prefix=f"tenancy-pg-{tag}-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PostgresCluster(binaries, folder, free_port())
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        _unavailable(f"the second PostgreSQL server did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()

"""PgBouncer in transaction pooling mode in front of the test PostgreSQL server.

`running_pgbouncer` starts the ``pgbouncer`` binary (Debian package ``pgbouncer``) in the
foreground on a free loopback port, with a small server pool, and stops it on exit, also when the
test fails. `server_connection_sampler` watches ``pg_stat_activity`` over a direct connection, so
a test can prove the server side never saw more connections than the pool allows.

A missing binary skips the test, unless TENANCY_TEST_REQUIRE_SERVICES=1, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.services import REQUIRE_SERVICES, free_port

POOL_SIZE = 2
MAX_CLIENT_CONNECTIONS = 200
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
START_ATTEMPTS = 3
SAMPLE_INTERVAL_SECONDS = 0.02
QUIET_TIMEOUT_SECONDS = 5.0
# PgBouncer refuses to run as root; it switches to this account (the PostgreSQL package's).
UNPRIVILEGED_USER = "postgres"


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: ``url`` goes through it to ``server_url``'s database."""

    url: str
    server_url: str
    database: str
    pool_size: int
    log: Path


def require_pgbouncer() -> str:
    """The path of the ``pgbouncer`` binary; skip (or fail, when services are required) without."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if binary is not None:
        return binary
    message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and TENANCY_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@contextmanager
def running_pgbouncer(
    server_url: str, *, pool_size: int = POOL_SIZE, every_database: bool = False
) -> Iterator[PgBouncer]:
    """Run PgBouncer in transaction mode in front of ``server_url`` until the block exits.

    With ``every_database`` it also serves any other database of that server by its own name
    (a ``*`` entry), a pool of ``pool_size`` for each: database isolation through PgBouncer.
    """
    binary = require_pgbouncer()
    server = make_url(server_url)
    with tempfile.TemporaryDirectory(prefix="tenancy-pgbouncer-") as folder:
        workdir = Path(folder)
        user = _unprivileged_user()
        if user is not None:
            # PgBouncer reads its config as that user after dropping root.
            shutil.chown(workdir, user=user)
        log = workdir / "pgbouncer.log"
        last_error = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            ini = _write_ini(workdir, server, port, pool_size, _version(binary), every_database)
            command = [binary, *(["-u", user] if user is not None else []), str(ini)]
            with log.open("ab") as output:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=output, stderr=output
                )
            try:
                if _wait_until_listening(process, port):
                    url = server.set(host="127.0.0.1", port=port, password=None)
                    yield PgBouncer(
                        url=url.render_as_string(hide_password=False),
                        server_url=server_url,
                        database=server.database or "",
                        pool_size=pool_size,
                        log=log,
                    )
                    return
            finally:
                _stop(process)
            last_error = log.read_text(errors="replace")[-2000:]
            if "Address already in use" not in last_error:
                break  # another process taking the port is the only reason worth a retry
        pytest.fail(f"pgbouncer did not start listening:\n{last_error}", pytrace=False)


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        pytest.fail(f"running as root, and there is no {UNPRIVILEGED_USER!r} user for pgbouncer")
    return UNPRIVILEGED_USER


def _version(binary: str) -> tuple[int, int]:
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", output)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _write_ini(
    workdir: Path,
    server: URL,
    port: int,
    pool_size: int,
    version: tuple[int, int],
    every_database: bool = False,
) -> Path:
    target = [
        f"host={server.host or '127.0.0.1'}",
        f"port={server.port or 5432}",
        f"dbname={server.database}",
        f"user={server.username or 'postgres'}",
    ]
    if server.password:
        target.append(f"password={server.password}")
    lines = [
        "[databases]",
        f"{server.database} = {' '.join(target)}",
        # The fallback entry connects to the database the client names.
        *([f"* = {' '.join(t for t in target if not t.startswith('dbname='))}"] * every_database),
        "",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        # No unix socket: parallel runs would fight over /tmp/.s.PGSQL.<port>.
        "unix_socket_dir =",
        # Clients are not authenticated; every server login uses the user named above.
        "auth_type = any",
        "pool_mode = transaction",
        f"default_pool_size = {pool_size}",
        "min_pool_size = 0",
        "reserve_pool_size = 0",
        f"max_client_conn = {MAX_CLIENT_CONNECTIONS}",
        "ignore_startup_parameters = extra_float_digits",
        "logfile =",
        "pidfile =",
    ]
    if version >= (1, 21):
        # Newer PgBouncers can track protocol-level prepared statements themselves; turn that
        # off so the tests exercise the plain transaction pooling the driver must cope with.
        lines.append("max_prepared_statements = 0")
    ini = workdir / "pgbouncer.ini"
    ini.write_text("\n".join(lines) + "\n")
    ini.chmod(0o644)
    return ini


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM: immediate shutdown, closing every connection
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@dataclass
class ServerConnections:
    """Server connections to one database, as ``pg_stat_activity`` sampled them."""

    samples: list[int] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


@asynccontextmanager
async def server_connection_sampler(
    server_url: str, database: str, *, interval: float = SAMPLE_INTERVAL_SECONDS
) -> AsyncIterator[ServerConnections]:
    """Count ``database``'s server connections every ``interval`` seconds while the block runs.

    ``database`` is a ``LIKE`` pattern: ``'h5\\_pgb\\_%'`` counts several databases together.

    The sampler connects to the ``postgres`` maintenance database, so it never counts itself. It
    starts only once ``database`` has no connections left, so a backend that is still exiting
    from an earlier direct connection (a reset) is never mistaken for a pooled one.
    """
    engine = create_async_engine(make_url(server_url).set(database="postgres"), poolclass=NullPool)
    result = ServerConnections()
    count_sql = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname LIKE :database AND backend_type = 'client backend'"
    )
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")

            async def count() -> int:
                # pg_stat_activity is a snapshot per transaction; clear it for a fresh reading.
                await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
                return int((await conn.execute(count_sql, {"database": database})).scalar_one())

            for _ in range(round(QUIET_TIMEOUT_SECONDS / interval)):
                if not await count():
                    break
                await asyncio.sleep(interval)

            stop = asyncio.Event()

            async def sample() -> None:
                while not stop.is_set():
                    result.samples.append(await count())
                    try:
                        await asyncio.wait_for(stop.wait(), interval)
                    except TimeoutError:
                        pass

            task = asyncio.create_task(sample())
            try:
                yield result
            finally:
                stop.set()
                await task
    finally:
        await engine.dispose()

"""A PgBouncer of the benchmark's own, in transaction mode, in front of a PostgreSQL server.

It serves every database of the server by its own name (a ``*`` entry) and logs in to the
server as the client's user (``auth_type = trust``: the users are listed in an ``auth_file``
without passwords; the server must trust them too, as a private benchmark cluster does). Each
user gets at most ``budget`` server connections over all databases together
(``max_user_connections``), each database at most ``pool_size`` (``default_pool_size`` and
``max_db_connections``), so one user's server connections stay within the budget however many
tenant databases it reaches. ``server_reset_query_always = 1`` resets every server connection
after each transaction (``DISCARD ALL``), which the library relies on behind PgBouncer.

PgBouncer 1.18 does not close another pool's idle server connection when ``max_user_connections``
is reached: a client of a new database waits until one is idle for ``server_idle_timeout``. That
timeout is therefore short here (``idle_seconds``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from benchmarks import common

START_TIMEOUT_SECONDS = 10.0
# PgBouncer refuses to run as root; it switches to this account (the PostgreSQL package's).
UNPRIVILEGED_USER = "postgres"


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    pid: int

    def url(self, server: str, database: str, user: str) -> str:
        """``server``'s URL for ``database`` and ``user``, through this PgBouncer."""
        url = make_url(server).set(
            host=self.host, port=self.port, database=database, username=user, password=None
        )
        return url.render_as_string(hide_password=False)


def binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    return found


def config(
    server: str,
    port: int,
    *,
    budget: int,
    pool_size: int,
    clients: int,
    idle_seconds: float,
    auth_file: Path,
) -> str:
    target = make_url(server)
    return "\n".join(
        [
            "[databases]",
            f"* = host={target.host or '127.0.0.1'} port={target.port or 5432}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {auth_file}",
            "pool_mode = transaction",
            "server_reset_query = DISCARD ALL",
            "server_reset_query_always = 1",
            f"default_pool_size = {pool_size}",
            f"max_db_connections = {pool_size}",
            f"max_user_connections = {budget}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {clients}",
            f"server_idle_timeout = {idle_seconds:g}",
            "ignore_startup_parameters = extra_float_digits",
            "logfile =",
            "pidfile =",
            "",
        ]
    )


@contextmanager
def running(
    server: str,
    users: list[str],
    *,
    budget: int,
    pool_size: int,
    clients: int,
    idle_seconds: float,
) -> Iterator[PgBouncer]:
    """Run PgBouncer in front of ``server`` for ``users`` until the block exits."""
    command = [binary()]
    with tempfile.TemporaryDirectory(prefix="fleet-pgbouncer-") as folder:
        workdir = Path(folder)
        if os.geteuid() == 0:
            pwd.getpwnam(UNPRIVILEGED_USER)
            shutil.chown(workdir, user=UNPRIVILEGED_USER)
            command += ["-u", UNPRIVILEGED_USER]
        auth_file = workdir / "users.txt"
        auth_file.write_text("".join(f'"{user}" ""\n' for user in users))
        port = common.free_port()
        ini = workdir / "pgbouncer.ini"
        ini.write_text(
            config(
                server,
                port,
                budget=budget,
                pool_size=pool_size,
                clients=clients,
                idle_seconds=idle_seconds,
                auth_file=auth_file,
            )
        )
        for path in (auth_file, ini):
            path.chmod(0o644)
        log = workdir / "pgbouncer.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [*command, str(ini)], stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        try:
            if not listening(process, port):
                raise SystemExit(f"pgbouncer did not start:\n{log.read_text()[-2000:]}")
            yield PgBouncer("127.0.0.1", port, process.pid)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()


def listening(process: subprocess.Popen[bytes], port: int) -> bool:
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

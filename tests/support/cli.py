"""Run the ``fastapi-tenancy`` command line: in process through ``main(argv)``, or as the
installed console script.

The console script is only ``fastapi_tenancy.cli:main``, so most tests call ``main`` in this
process (``run_cli``), which skips a full interpreter start and import per command. A few smoke
tests run the real script (``run_console_script``): the entry point, its exit codes, the working
directory on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import MetaData

from fastapi_tenancy.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
TEST_METADATA = "tests.support.models:Base.metadata"
# For tenants whose tables Alembic creates: provisioning makes the storage only.
NO_TABLES = MetaData()
NO_TABLES_SPEC = "tests.support.cli:NO_TABLES"
# The script pip installed next to this interpreter, so the tests exercise the real entry point.
CLI = shutil.which("fastapi-tenancy", path=str(Path(sys.executable).parent))
# One command at a time: the environment, working directory and standard streams are global.
_ONE_AT_A_TIME = threading.Lock()


def cli_environment(database_url: str, **settings: str) -> dict[str, str]:
    """The test process's environment without its TENANCY_* settings, plus ``settings``.

    ``TENANCY_TENANT_METADATA`` names the test models, as an app's environment names its own.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("TENANCY_") and not name.startswith("TENANCY_TEST_"))
        and name != "WEB_CONCURRENCY"
    }
    env["TENANCY_DATABASE_URL"] = database_url
    # The tables tenants get, as an app's environment names them (importable from the repository).
    env["TENANCY_TENANT_METADATA"] = TEST_METADATA
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    env.update({f"TENANCY_{name.upper()}": value for name, value in settings.items()})
    return env


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``fastapi-tenancy ARGS`` in this process, with exactly ``env`` as its environment and
    ``cwd`` as its working directory, as the console script would run it.

    ``main`` runs its own event loop; from a coroutine (an async test) it runs in a thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_main(args, env, cwd)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run_main, args, env, cwd).result(timeout)


def run_console_script(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``fastapi-tenancy ARGS`` as a process: the installed console script, as a user runs it."""
    assert CLI is not None, f"fastapi-tenancy is not installed next to {sys.executable}"
    return subprocess.run(
        [CLI, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_main(
    args: tuple[str, ...], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        _ONE_AT_A_TIME,
        _environment(env),
        _working_directory(cwd),
        _logging_to(err),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return subprocess.CompletedProcess(
        ["fastapi-tenancy", *args], code, out.getvalue(), err.getvalue()
    )


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _working_directory(cwd: Path) -> Iterator[None]:
    """``cwd`` as the working directory; what the command imports from it is forgotten after,
    so the next command imports its own files, as a new process would."""
    saved_directory, saved_path, saved_modules = os.getcwd(), list(sys.path), set(sys.modules)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_directory)
        sys.path[:] = saved_path
        folder = str(Path(cwd).resolve())
        for name in set(sys.modules) - saved_modules:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith(folder):
                del sys.modules[name]


@contextlib.contextmanager
def _logging_to(stream: io.StringIO) -> Iterator[None]:
    """Log records reach ``stream`` as they reach a process's stderr when nothing configured
    logging (Python's last-resort handler: warnings and above, the message alone)."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

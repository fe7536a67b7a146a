"""Run a chain of doc blocks in one namespace: ``python -m tests.support.docs_runner BLOCKS.json``.

Each chain runs in a process of its own (so models a page defines never meet another page's) and
in a scratch working directory, where the default ``./tenancy.db`` lands. Top-level ``await`` and
``async with`` work as in an asyncio REPL. Line numbers in tracebacks are the Markdown file's.

``python -m tests.support.docs_runner --serve`` imports the library once and forks a fresh child
per chain it reads on stdin (one JSON request a line, see `serve`), answering each with the
child's exit code: the chains stay apart without paying an interpreter start and the imports each.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import signal
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

from fastapi_tenancy import Tenancy

# What a reader has in scope from the pages' first examples: the usual imports, a declarative
# Base and an app. Blocks that define their own replace these.
PRELUDE = """\
from fastapi import Depends, FastAPI
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fastapi_tenancy import *


class Base(DeclarativeBase):
    pass


app = FastAPI()
"""


async def run(blocks: list[dict[str, Any]]) -> None:
    # A real module, so SQLAlchemy can resolve the models' annotations in it.
    module = types.ModuleType("__docs__")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    exec(compile(PRELUDE, "<prelude>", "exec", dont_inherit=True), namespace)
    try:
        for block in blocks:
            # Padding puts each line at its line number in the page, for readable tracebacks.
            source = "\n" * (block["line"] - 1) + block["source"]
            # dont_inherit: the blocks run without this file's `from __future__` imports.
            code = compile(
                source,
                block["page"],
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                await result
    finally:
        for value in list(namespace.values()):
            if isinstance(value, Tenancy) and value.started:
                await value.close()


def serve() -> None:
    """Answer each request line on stdin with the exit code of a forked child that ran it.

    A request is ``{"blocks": PATH, "cwd": DIR, "env": {...}, "output": PATH, "timeout": S}``:
    the child runs the chain in ``PATH`` with exactly ``env`` as its environment, in ``DIR``, its
    stdout and stderr in ``output``; one that outlives ``timeout`` seconds is killed (code -9).
    """
    # What every chain imports (the prelude's modules): once here, inherited by each child.
    exec(compile(PRELUDE, "<prelude>", "exec", dont_inherit=True), {})
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.monotonic() + request["timeout"]
        while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                waited = os.waitpid(pid, 0)
                break
            time.sleep(0.005)
        print(os.waitstatus_to_exitcode(waited[1]), flush=True)


def _child(request: dict[str, Any]) -> None:
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        blocks = json.loads(Path(request["blocks"]).read_text(encoding="utf-8"))
        asyncio.run(run(blocks))
        code = 0
    except SystemExit as exc:  # as the interpreter exits for it
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        asyncio.run(run(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))

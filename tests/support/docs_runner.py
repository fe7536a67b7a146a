"""Run a chain of doc blocks in one namespace: ``python -m tests.support.docs_runner BLOCKS.json``.

Runs in its own process (so models a page defines never meet another page's) and in a scratch
working directory, where the default ``./tenancy.db`` lands. Top-level ``await`` and ``async
with`` work as in an asyncio REPL. Line numbers in tracebacks are the Markdown file's.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import sys
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


if __name__ == "__main__":
    asyncio.run(run(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))

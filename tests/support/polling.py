"""``eventually``: wait for a condition that another task, thread or process brings about.

Tests poll instead of sleeping a fixed time: a fixed sleep is too short on a loaded machine and
too long on a quiet one, and a poll returns as soon as the condition holds.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest

Condition = Callable[[], object | Awaitable[object]]


async def eventually(
    condition: Condition, *, within: float = 30.0, every: float = 0.02, what: str = ""
) -> None:
    """Return once ``condition()`` is truthy (it may be a coroutine function); fail after
    ``within`` seconds.

    The deadline is generous on purpose: it bounds a hang, it does not measure speed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            pytest.fail(f"{what or 'condition'} not reached within {within} s")
        await asyncio.sleep(every)

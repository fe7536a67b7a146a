"""``eventually``: wait for a condition that another task, thread or process brings about.

Tests poll instead of sleeping a fixed time: a fixed sleep is too short on a loaded machine and
too long on a quiet one, and a poll returns as soon as the condition holds. ``until`` is the same
wait for synchronous code (fixtures that start servers with `subprocess`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

Condition = Callable[[], object | Awaitable[object]]


async def eventually(
    condition: Condition,
    *,
    within: float = 30.0,
    every: float = 0.02,
    what: str = "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> None:
    """Return once ``condition()`` is truthy (it may be a coroutine function); fail after
    ``within`` seconds.

    An exception of a type in ``ignoring`` counts as "not yet" (a server that is still starting
    refuses connections). The deadline is generous on purpose: it bounds a hang, it does not
    measure speed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: BaseException | None = None
    while True:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
        except ignoring as exc:
            result, last = False, exc
        if result:
            return
        if loop.time() >= deadline:
            pytest.fail(_timed_out(what, within, last))
        await asyncio.sleep(every)


def until(
    condition: Callable[[], object],
    *,
    within: float = 30.0,
    every: float = 0.02,
    what: str = "",
    ignoring: tuple[type[BaseException], ...] = (),
) -> None:
    """`eventually` for synchronous code: block until ``condition()`` is truthy."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while True:
        try:
            if condition():
                return
        except ignoring as exc:
            last = exc
        if time.monotonic() >= deadline:
            pytest.fail(_timed_out(what, within, last))
        time.sleep(every)


def _timed_out(what: str, within: float, last: BaseException | None) -> str:
    message = f"{what or 'condition'} not reached within {within} s"
    return message if last is None else f"{message} (last error: {last!r})"

"""Stopping the library's background tasks without ever hanging a shutdown.

A background loop (the invalidation listener, the Sentinel follower, the JWKS refresher, the
audit writer) is stopped by cancelling it. A cancellation can be lost on the way: a client
library that turns it into its own error (a timeout raised as ``TimeoutError``, which is an
``OSError``, or a connection error), and a loop that retries on exactly those errors, keeps
running. ``task.cancel(); await task`` then waits forever, and the process never shuts down.

So `stop` cancels again until the task ends and gives up after a bounded grace, logging what it
left behind; and `cancelling` lets a loop tell a lost cancellation from a real failure.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["STOP_GRACE_SECONDS", "cancelling", "stop"]

logger = logging.getLogger("fastapi_tenancy")

# Longer than the library's own network timeouts (1 s for Redis by default), so a task caught in
# one call still ends on its own once that call gives up.
STOP_GRACE_SECONDS = 2.0
# How often a task that has not ended yet is cancelled again.
_RECANCEL_SECONDS = 0.05


def cancelling() -> bool:
    """Whether the running task has been cancelled, even if the error it sees says otherwise.

    A loop that catches network errors re-raises `asyncio.CancelledError` when this is true.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop(
    task: asyncio.Task[Any] | None, *, what: str, grace: float = STOP_GRACE_SECONDS
) -> bool:
    """Cancel ``task`` and wait at most ``grace`` seconds for it to end; whether it ended.

    The task is cancelled again every few milliseconds while it runs, so one swallowed
    cancellation does not keep it alive. Its own outcome (an error, a cancellation) is consumed
    here, never raised; a cancellation of the caller is raised as usual.
    """
    if task is None or task.done():
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning(
                "%s did not stop within %.1f s of being cancelled; it is left to the process exit",
                what,
                grace,
            )
            return False
        await asyncio.wait({task}, timeout=min(remaining, _RECANCEL_SECONDS))
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.warning("%s ended with an error: %s: %s", what, type(error).__name__, error)
    return True

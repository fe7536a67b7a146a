"""Stopping a background task never hangs, even when the task loses its cancellation.

The loops below retry on the errors a client library raises, as the library's own loops do; a
client that turns the cancellation into such an error (redis-py can raise its timeout, an
``OSError``) is played by a loop that converts the first ``swallowed`` cancellations.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_tenancy._tasks import cancelling, stop


async def _converting_loop(swallowed: int, *, recognise: bool) -> None:
    """Retries on OSError; its first ``swallowed`` cancellations arrive as TimeoutError."""
    left = swallowed
    while True:
        try:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if left == 0:
                    raise
                left -= 1
                raise TimeoutError("timed out while being cancelled") from None
        except OSError as exc:
            if recognise and cancelling():
                raise asyncio.CancelledError from exc
            await asyncio.sleep(0)  # a retry


@settings(max_examples=30, deadline=None)
@given(swallowed=st.integers(min_value=0, max_value=20), recognise=st.booleans())
async def test_a_task_that_swallows_cancellations_still_stops(
    swallowed: int, recognise: bool
) -> None:
    task = asyncio.ensure_future(_converting_loop(swallowed, recognise=recognise))
    await asyncio.sleep(0)
    assert await stop(task, what="the loop", grace=5.0)
    assert task.done()


async def test_a_loop_that_recognises_a_lost_cancellation_stops_at_the_first_cancel() -> None:
    task = asyncio.ensure_future(_converting_loop(1000, recognise=True))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_a_task_that_will_not_stop_is_left_after_the_grace_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gave_up = asyncio.Event()

    async def stubborn() -> None:
        while not gave_up.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="fastapi_tenancy"):
        assert not await stop(task, what="the stubborn loop", grace=0.2)
    assert "the stubborn loop did not stop within 0.2 s" in caplog.text
    assert not task.done()
    gave_up.set()  # the test's own tidying: let it end
    task.cancel()
    await asyncio.wait({task}, timeout=5)


async def test_the_caller_being_cancelled_is_not_swallowed() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.shield(asyncio.sleep(0.5))

    task = asyncio.ensure_future(slow_to_stop())
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(stop(task, what="the slow loop", grace=5.0))
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await asyncio.wait({task}, timeout=5)


async def test_an_error_the_task_ends_with_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("broke while closing") from None

    task = asyncio.ensure_future(failing_on_cancel())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="fastapi_tenancy"):
        assert await stop(task, what="the failing loop")
    assert "the failing loop ended with an error: RuntimeError: broke while closing" in caplog.text

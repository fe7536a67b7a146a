"""The invalidation listener replaces its subscription at once when asked, and comes back quickly
after a loss: while it is down or stale, other processes' invalidations do not reach it.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_tenancy.cache import invalidation
from fastapi_tenancy.cache.invalidation import InvalidationListener
from tests.support.polling import eventually
from tests.support.redis_cache import redis_cache
from tests.support.redis_server import PrivateRedis

pytestmark = [pytest.mark.redis]


class Recorder:
    def __init__(self) -> None:
        self.states: list[bool] = []
        self.messages: list[str] = []

    async def on_message(self, identifier: str) -> None:
        self.messages.append(identifier)

    async def on_connected(self, up: bool) -> None:
        self.states.append(up)


async def test_a_resubscription_asked_for_does_not_wait_for_the_poll_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A poll interval far longer than the bound below: only an at-once renewal meets it.
    monkeypatch.setattr(invalidation, "POLL_SECONDS", 60.0)
    cache = redis_cache()
    seen = Recorder()
    listener = InvalidationListener(
        cache.client, cache.channel, on_message=seen.on_message, on_connected=seen.on_connected
    )
    try:
        await listener.start(wait=10)
        assert seen.states == [True]
        listener.resubscribe()
        await eventually(lambda: seen.states == [True, True], within=10, what="a new subscription")
        await cache.client.publish(cache.channel, "acme")
        await eventually(lambda: seen.messages == ["acme"], within=10, what="the message")
    finally:
        await listener.close()
        await cache.close()


async def test_after_a_loss_the_first_attempt_to_subscribe_again_comes_early(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = redis_cache(private_redis.url)
    seen = Recorder()
    # The steady retry interval is far longer than the bound below: only the early first
    # attempts meet it.
    listener = InvalidationListener(
        cache.client,
        cache.channel,
        on_message=seen.on_message,
        on_connected=seen.on_connected,
        retry_seconds=60.0,
    )
    try:
        await listener.start(wait=10)
        assert seen.states == [True]
        await private_redis.stop()
        await eventually(lambda: seen.states == [True, False], within=10, what="the loss")
        await private_redis.start()
        await eventually(
            lambda: seen.states == [True, False, True], within=30, what="the new subscription"
        )
    finally:
        await listener.close()
        await cache.close()


@settings(max_examples=25, deadline=None)
@given(ticks=st.integers(min_value=0, max_value=12))
async def test_closing_right_after_a_resubscription_request_always_ends(ticks: int) -> None:
    # A failed Redis read asks for a new subscription; a shutdown can come at any point of the
    # renewal that follows. Closing cut the renewal short at one of its awaits and swallowed the
    # cancellation there: the listener subscribed again and close() waited for ever.
    cache = redis_cache()
    seen = Recorder()
    listener = InvalidationListener(
        cache.client, cache.channel, on_message=seen.on_message, on_connected=seen.on_connected
    )
    try:
        await listener.start(wait=10)
        listener.resubscribe()
        for _ in range(ticks):
            await asyncio.sleep(0)
        await asyncio.wait_for(listener.close(), 10)
    finally:
        await cache.close()

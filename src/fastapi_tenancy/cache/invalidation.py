"""`InvalidationListener`: hears the invalidations other processes publish over Redis pub/sub.

Pub/sub delivers at most once: a message sent while this process is disconnected is lost. So the
listener reports every state change, and on every (re)subscription tells its owner to forget
everything it holds, since it cannot know what it missed. redis-py reconnects a dropped pub/sub
connection by itself and subscribes again without raising; the server's subscription confirmation
is the one sign of that, so every confirmation counts as a (re)subscription.

A failover can leave the subscription open on a server that is no longer where messages are
published first (a demoted Sentinel master, a cluster node that lost its slots), and it may miss
what was published during the switch. So the listener subscribes afresh when the sentinels name
another master, and when its owner calls `resubscribe` after a failed command; either counts as a
(re)subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from fastapi_tenancy._redis import pubsub, subscription_is_stale
from fastapi_tenancy._tasks import cancelling, stop

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["InvalidationListener"]

logger = logging.getLogger("fastapi_tenancy.cache")

# How long a get_message call waits before the loop checks that it should still run.
POLL_SECONDS = 1.0
# The first wait before subscribing again after a loss; it doubles up to ``retry_seconds``.
FIRST_RETRY_SECONDS = 0.1


class InvalidationListener:
    """Subscribes to ``channel`` in a background task and calls back for every message.

    ``on_message(identifier)`` runs for each invalidation (``"*"`` means all), and
    ``on_connected(up)`` each time the subscription is established (``True``, also after a
    reconnection redis-py made on its own) or lost (``False``). After a loss it retries every
    ``retry_seconds`` on its own; an ``on_connected(True)`` that raises a Redis error counts as a
    loss.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        channel: str,
        *,
        on_message: Callable[[str], Awaitable[None]],
        on_connected: Callable[[bool], Awaitable[None]],
        retry_seconds: float = 1.0,
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_connected = on_connected
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._renew = False
        # Set by `resubscribe`: ends the wait for the next message at once, so a subscription
        # left on a demoted server is replaced within milliseconds, not a poll interval.
        self._wake = asyncio.Event()

    async def start(self, *, wait: float) -> None:
        """Start listening; wait up to ``wait`` seconds for the first subscription."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="fastapi-tenancy-invalidation")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait)

    def resubscribe(self) -> None:
        """Subscribe afresh at once (ignored while no subscription is up)."""
        self._renew = True
        self._wake.set()

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task, what="the tenant cache invalidation listener")

    async def _run(self) -> None:
        connected: bool | None = None
        # After a loss the first attempts come quickly (a failover often completes within a
        # fraction of a second of the first error), then every ``retry_seconds``: while the
        # channel is down memory entries live at most the degraded TTL, and the sooner the
        # subscription is back the sooner invalidations arrive at once again.
        delay = FIRST_RETRY_SECONDS
        while True:
            self._renew = False
            self._wake.clear()
            try:
                async with pubsub(self._client) as subscription:
                    await subscription.subscribe(self._channel)
                    while not self._renew:
                        message = await self._next_message(subscription)
                        kind = None if message is None else message.get("type")
                        if kind == "subscribe":
                            await self._on_connected(True)
                            connected = True
                            delay = FIRST_RETRY_SECONDS
                            self._subscribed.set()
                        elif kind == "message" and message is not None:
                            await self._on_message(str(message["data"]))
                        if subscription_is_stale(self._client, subscription):
                            break  # a failover named another master: subscribe there
            except (RedisError, OSError) as exc:
                if cancelling():
                    # redis-py can turn the cancellation that closes the listener into a
                    # connection error or a timeout (an OSError): retrying would never end.
                    raise asyncio.CancelledError from exc
                if connected is not False:
                    connected = False
                    logger.warning("tenant cache invalidation channel lost: %s", exc)
                    await self._on_connected(False)
            else:
                continue  # asked to renew a working subscription: at once
            await asyncio.sleep(min(delay, self._retry_seconds))
            delay *= 2

    async def _next_message(self, subscription: Any) -> dict[str, Any] | None:
        """The next message within a poll interval, or ``None`` early when `resubscribe` asks."""
        if self._wake.is_set():
            return None
        reading = asyncio.ensure_future(subscription.get_message(timeout=POLL_SECONDS))
        waking = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({reading, waking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waking.cancel()
            if not reading.done():
                # Woken, or the listener closed: the subscription is abandoned (the caller
                # leaves it), so a read cut short is harmless; it ends before the connection.
                # asyncio.wait, not ``await reading``: the read's own outcome is not wanted, and
                # a cancellation of this task arriving meanwhile must not be swallowed with it.
                reading.cancel()
                await asyncio.wait({reading})
                if not reading.cancelled():
                    reading.exception()  # consumed: the read was abandoned
        if reading.cancelled():
            return None
        message: dict[str, Any] | None = reading.result()
        return message

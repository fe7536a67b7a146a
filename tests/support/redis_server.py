"""`PrivateRedis`: a ``redis-server`` of the test's own, on a free port, to stop and start at will.

The shared Redis is never stopped; a test that needs Redis to die kills this one instead.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import Self

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.polling import eventually
from tests.support.services import free_port, redis_binary

__all__ = ["PrivateRedis"]

START_SECONDS = 10.0
START_POLL_SECONDS = 0.05
# What redis-server names its RDB snapshot in ``--dir`` unless told otherwise.
SNAPSHOT_FILE = "dump.rdb"


class PrivateRedis:
    """A throwaway ``redis-server``; `stop` kills it, `start` brings it back.

    Without ``snapshot_dir`` nothing persists. With it, the server loads ``dump.rdb`` from that
    folder when it starts and writes it on ``SAVE`` only (never on its own), so a test chooses
    exactly which state a restart restores.

    Example::

        async with PrivateRedis() as redis:
            config = TenancyConfig(redis_url=redis.url, ...)
            await redis.stop()
            await redis.start()   # same port, empty data

        async with PrivateRedis(snapshot_dir=tmp_path) as redis:
            await redis.stop(snapshot=True)
            await redis.start()   # same port, the data as of the kill
            await redis.stop()
            redis.forget_snapshot()
            await redis.start()   # empty again
    """

    def __init__(self, *, snapshot_dir: Path | None = None) -> None:
        self._binary = redis_binary()
        self.port = free_port()
        self._snapshot_dir = snapshot_dir
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server and return once it answers PING."""
        persistence = [] if self._snapshot_dir is None else ["--dir", str(self._snapshot_dir)]
        self._process = await asyncio.create_subprocess_exec(
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *persistence,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = Redis(host="127.0.0.1", port=self.port)
        try:
            await eventually(
                client.ping,
                within=START_SECONDS,
                every=START_POLL_SECONDS,
                what=f"redis-server on port {self.port} answering PING",
                ignoring=(RedisConnectionError,),
            )
        finally:
            await client.aclose()

    async def stop(self, *, snapshot: bool = False) -> None:
        """Kill the server (no clean shutdown, as a crash would) and wait for it to exit.

        ``snapshot`` saves the data (``SAVE``) right before the kill, so the next `start` loads
        it; only a server with a ``snapshot_dir`` can.
        """
        if snapshot:
            if self._snapshot_dir is None:
                raise ValueError("only a PrivateRedis with a snapshot_dir can save a snapshot")
            client = Redis(host="127.0.0.1", port=self.port)
            try:
                await client.save()
            finally:
                await client.aclose()
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    def forget_snapshot(self) -> None:
        """Remove the snapshot, so the next `start` is empty."""
        if self._snapshot_dir is not None:
            (self._snapshot_dir / SNAPSHOT_FILE).unlink(missing_ok=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

"""`PrivateRedis` restarts with its data (an RDB snapshot) or empty, as the soak needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import PrivateRedis


async def stored(redis: PrivateRedis) -> bytes | str | None:
    client = Redis(host="127.0.0.1", port=redis.port)
    try:
        return await client.get("key")
    finally:
        await client.aclose()


async def test_a_restart_with_its_data_keeps_what_was_written_and_a_plain_one_forgets_it(
    tmp_path: Path,
) -> None:
    async with PrivateRedis(snapshot_dir=tmp_path) as redis:
        client = Redis(host="127.0.0.1", port=redis.port)
        try:
            await client.set("key", "value")
        finally:
            await client.aclose()

        await redis.stop(snapshot=True)
        await redis.start()
        assert await stored(redis) == b"value"

        await redis.stop()
        redis.forget_snapshot()
        await redis.start()
        assert await stored(redis) is None


async def test_only_a_server_with_a_snapshot_dir_can_save_a_snapshot() -> None:
    async with PrivateRedis() as redis:
        with pytest.raises(ValueError, match="snapshot_dir"):
            await redis.stop(snapshot=True)

"""`RedisTenantCache`: tenant lookups shared by every process through Redis, the L2 of lookup.

Keys, under a prefix so several apps can share one Redis:

* ``<prefix>:tenant:<identifier>`` holds the tenant as JSON (or ``{"absent": true}``), with a TTL,
  behind the server mark it was written under;
* ``<prefix>:gen:<identifier>`` counts the invalidations of the identifier;
* ``<prefix>:server`` is the server mark: the ``run_id`` of the Redis process the entries belong to;
* ``<prefix>:invalidate`` is the pub/sub channel on which invalidations are announced.

On a Redis Cluster the key prefix is a hash tag (``{<prefix>}:tenant:<identifier>``, ...), so all of
them share one slot, as the scripts below need.

A process that read the store before an invalidation must not write its stale answer after it.
`read_token` returns the server mark and the generation before the store is read, and `set` writes
only if neither has moved since, atomically in one Lua script.

A Redis restarted from a snapshot (RDB or AOF) brings back entries and generation counters from
before the restart, without the invalidations that followed them. Every process calls
`sync_server` when it (re)subscribes: a ``run_id`` that differs from the stored mark means a new
Redis process, so the mark moves to it, and from then on every older entry reads as a miss and
every older token is refused. The counters need no reset: a token carries the mark too.

A tenant with its own ``database_url`` is never written to Redis: the URL carries a password, and
Redis is not where secrets live. Such tenants are cached in process memory only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi_tenancy._redis import is_cluster, redis_client
from fastapi_tenancy.cache.base import CachedLookup
from fastapi_tenancy.models import Tenant

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

__all__ = ["RedisTenantCache", "redis_client"]

logger = logging.getLogger("fastapi_tenancy.cache")

# Every process pays one store read after an invalidation; the counter outlives any sane load.
GENERATION_TTL_SECONDS = 24 * 3600
CLEAR_ALL = "*"

# KEYS: entry, generation, server mark. ARGV: generation ('' for no check), mark, value, ms.
_SET_IF_CURRENT = """
local mark = redis.call('GET', KEYS[3]) or ''
if ARGV[1] ~= '' then
    if mark ~= ARGV[2] or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then
        return 0
    end
end
redis.call('SET', KEYS[1], mark .. '|' .. ARGV[3], 'PX', ARGV[4])
return 1
"""

# KEYS: server mark. ARGV: the server's run_id. Returns 1 if it moved from another server's mark.
_MARK_SERVER = """
local mark = redis.call('GET', KEYS[1])
if mark == ARGV[1] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if mark then
    return 1
end
return 0
"""

# KEYS: entry, generation. ARGV: generation TTL, channel, identifier. One atomic step, so no
# process can read the entry gone but the generation unchanged; PUBLISH in a script also works
# on a cluster, which forwards it to every node.
_INVALIDATE = """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

_ABSENT = '{"absent":true}'


class RedisTenantCache:
    """A `TenantCache` in Redis, shared by every process of the app.

    ``delete`` also announces the invalidation on the channel, so the in-process caches of the
    other processes drop the identifier (see `InvalidationListener`). Redis errors propagate:
    `LayeredTenantCache` decides what a failure means.

    Example::

        cache = RedisTenantCache(redis_client("redis://localhost:6379/0", timeout=1.0))
        await cache.set("acme", tenant, ttl=60)
    """

    def __init__(self, client: Redis | RedisCluster, *, prefix: str = "fastapi_tenancy") -> None:
        self.client = client
        self.prefix = prefix
        self.channel = f"{prefix}:invalidate"
        # The scripts read an entry, its generation and the server mark together, which a cluster
        # allows only within one hash slot: there every key carries the prefix as its hash tag,
        # so the whole tenant cache lives on one master (it is small) and fails over with it.
        self._keys = f"{{{prefix}}}" if is_cluster(client) else prefix
        self._server_key = f"{self._keys}:server"
        self._set_if_current = client.register_script(_SET_IF_CURRENT)
        self._mark_server = client.register_script(_MARK_SERVER)
        self._invalidate = client.register_script(_INVALIDATE)

    def _key(self, identifier: str) -> str:
        return f"{self._keys}:tenant:{identifier}"

    def _generation_key(self, identifier: str) -> str:
        return f"{self._keys}:gen:{identifier}"

    async def get(self, identifier: str) -> CachedLookup | None:
        """The cached lookup, or ``None`` on a miss or after its TTL ran out."""
        hit, _ = await self.get_with_ttl(identifier)
        return hit

    async def get_with_ttl(self, identifier: str) -> tuple[CachedLookup | None, float]:
        """The cached lookup and the seconds it has left, in one round trip.

        An entry written under another server mark (before a Redis restart) is a miss.
        """
        key = self._key(identifier)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            pipe.get(self._server_key)
            raw, milliseconds, mark = await pipe.execute()
        if raw is None or milliseconds <= 0:
            return None, 0.0
        written_under, _, value = str(raw).partition("|")
        if written_under != (mark or ""):
            return None, 0.0
        return _decode(value), milliseconds / 1000

    async def read_token(self, identifier: str) -> str:
        """The server mark and the identifier's generation, for `set` to refuse a lost race."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self._generation_key(identifier))
            pipe.get(self._server_key)
            generation, mark = await pipe.execute()
        return f"{generation or '0'}@{mark or ''}"

    async def sync_server(self) -> bool:
        """Move the server mark to the Redis process now answering; ``True`` if another was there.

        Called on every (re)subscription. A moved mark invalidates every entry and token from
        before, so a Redis restored from a snapshot never serves what it restored. A Sentinel or
        Cluster failover promotes another process, so it moves the mark too: the replica may have
        missed the last writes (invalidations included) before it took over. A server that
        refuses INFO (some managed services rename it) cannot be told apart from its restart:
        that is logged, and entries are then trusted until their TTL.
        """
        from redis.exceptions import ResponseError  # redis-py is an optional extra

        try:
            if is_cluster(self.client):
                # The mark must name the master that holds the keys (and changes on failover).
                node = self.client.get_node_from_key(self._server_key)  # type: ignore[union-attr]
                info = await self.client.info("server", target_nodes=node)
            else:
                info = await self.client.info("server")
        except ResponseError as exc:
            logger.warning("tenant cache: Redis refuses INFO (%s); restarts go unnoticed", exc)
            return False
        run_id = str(info.get("run_id", ""))
        if not run_id:
            return False
        return bool(await self._mark_server(keys=[self._server_key], args=[run_id]))

    async def set(
        self, identifier: str, tenant: Tenant | None, *, ttl: float, token: str | None = None
    ) -> None:
        """Cache ``tenant`` (or its absence) for ``ttl`` seconds.

        With ``token`` (from `read_token`), only if no invalidation happened since.
        """
        key = self._key(identifier)
        milliseconds = int(ttl * 1000)
        if milliseconds <= 0 or (tenant is not None and tenant.database_url is not None):
            await self.client.delete(key)
            return
        value = _ABSENT if tenant is None else tenant.model_dump_json()
        generation, _, mark = (token or "").partition("@")
        await self._set_if_current(
            keys=[key, self._generation_key(identifier), self._server_key],
            args=[generation, mark, value, milliseconds],
        )

    async def delete(self, identifier: str) -> None:
        """Forget ``identifier`` everywhere: here, and in every process's in-memory cache."""
        await self._invalidate(
            keys=[self._key(identifier), self._generation_key(identifier)],
            args=[GENERATION_TTL_SECONDS, self.channel, identifier],
        )

    async def clear(self) -> None:
        """Forget every tenant under this prefix, in Redis and in every process."""
        async for key in self.client.scan_iter(match=f"{self._keys}:tenant:*", count=500):
            await self.client.delete(key)
        await self.client.publish(self.channel, CLEAR_ALL)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def _decode(raw: str) -> CachedLookup | None:
    if raw == _ABSENT:
        return CachedLookup(tenant=None)
    try:
        return CachedLookup(Tenant.model_validate_json(raw))
    except ValueError:
        # An entry written by an incompatible version is a miss, never an error or a guess.
        return None

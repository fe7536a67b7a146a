"""The one Redis client factory: a client for ``redis_url``, whatever the topology behind it.

Every Redis user of the library (the tenant cache, its pub/sub invalidations, the rate limiter,
``doctor``, readiness) gets its client here, so they agree on the URL forms, the timeouts and what
counts as a failure. The URL picks the topology:

* ``redis://[[user]:password@]host:port[/db]``, ``rediss://…``, ``unix:///path?db=0``: one
  server, a ``redis.asyncio.Redis``;
* ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]``: Sentinel, a
  ``redis.asyncio.Redis`` on a ``SentinelConnectionPool`` that follows the master of ``service``;
* ``redis+cluster://[[user]:password@]host:port[,host:port…]``: Cluster, a
  ``redis.asyncio.RedisCluster`` (any reachable node lets it discover the others).

These are the forms the ``limits`` library understands too. The credentials apply to the data
nodes and, for Sentinel, to the sentinels as well.

Failover: a Sentinel client asks the sentinels for the master on every new connection, and a
connection still open to a demoted master fails (redis-py turns its ``READONLY`` into a connection
error), so the next command reaches the new master. A cluster client refreshes its slot map when a
node stops answering or answers ``MOVED``. Until then commands fail fast, within ``timeout``, with
one of `REDIS_FAILURES`; callers treat that as an outage.

Pub/sub: `pubsub` opens a subscription on any topology. A cluster forwards every (non-sharded)
``PUBLISH`` to all its nodes, so a subscriber connected to any one node hears every message; the
node is chosen afresh at every (re)subscription, so losing it only costs a reconnection.

Example (also for components outside the cache, e.g. writing routing keys)::

    client = redis_client("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster", timeout=1.0)
    await client.set("key", "value")
    await client.aclose()
"""

from __future__ import annotations

import asyncio
import functools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from fastapi_tenancy._tasks import cancelling, stop

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.asyncio.client import PubSub

__all__ = [
    "REDIS_SCHEMES",
    "RedisTarget",
    "RedisUrlError",
    "is_cluster",
    "parse_redis_url",
    "pubsub",
    "redis_client",
    "redact_redis_url",
    "redis_failures",
    "subscription_is_stale",
]

Topology = Literal["server", "sentinel", "cluster"]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")

# How often an idle connection is checked before use; a dead one is replaced, not failed on.
HEALTH_CHECK_SECONDS = 30


def redact_redis_url(url: str) -> str:
    """``url`` with its password masked, for logs and error messages, whatever the topology.

    SQLAlchemy's URL parser (behind `fastapi_tenancy._secrets.redact_url`) refuses the
    several-hosts forms, so the password is masked by its shape (`fastapi_tenancy._secrets.mask`).
    """
    from fastapi_tenancy._secrets import mask

    return mask(url)


class RedisUrlError(ValueError):
    """A ``redis_url`` that names no usable topology; the message never contains the password."""


@dataclass(frozen=True)
class RedisTarget:
    """What a ``redis_url`` points at: the topology, its nodes and the credentials."""

    topology: Topology
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisTarget:
    """Split ``url`` into a `RedisTarget`; raises `RedisUrlError` for a malformed one."""
    if not url.startswith(REDIS_SCHEMES):
        raise RedisUrlError(
            "redis_url must start with redis://, rediss://, unix://, redis+sentinel:// or "
            "redis+cluster://"
        )
    if not url.startswith(("redis+sentinel://", "redis+cluster://")):
        return RedisTarget("server", url)
    scheme, _, rest = url.partition("://")
    # urlsplit refuses several host:port pairs in one netloc, so the locations are split by hand.
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    nodes = tuple(_node(location) for location in hosts.split(",") if location)
    if not nodes:
        raise RedisUrlError(f"{scheme}:// needs at least one host:port")
    if query:
        raise RedisUrlError(f"{scheme}:// takes no query parameters")
    segments = [segment for segment in path.split("/") if segment]
    common = {
        "nodes": nodes,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    if scheme == "redis+cluster":
        if segments:
            raise RedisUrlError("redis+cluster:// takes no path: a cluster has only database 0")
        return RedisTarget("cluster", url, **common)  # type: ignore[arg-type]
    if not segments or len(segments) > 2:
        raise RedisUrlError(
            "redis+sentinel:// needs the service name: redis+sentinel://host:26379/mymaster[/db]"
        )
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise RedisUrlError("the database after the sentinel service name must be a number")
    return RedisTarget(
        "sentinel",
        url,
        service=unquote(segments[0]),
        db=int(db),
        **common,  # type: ignore[arg-type]
    )


def _node(location: str) -> tuple[str, int]:
    host, _, port = location.rpartition(":")
    if not host or not port.isdigit():
        raise RedisUrlError("every Redis location must be host:port")
    return host.strip("[]"), int(port)


def redis_client(url: str, *, timeout: float = 1.0) -> Redis | RedisCluster:
    """A client for ``url`` whose every command gives up after ``timeout`` seconds.

    Replies are decoded to ``str``. The caller owns the client: ``await client.aclose()``.
    """
    try:
        from redis.asyncio import Redis, RedisCluster
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.retry import Retry
        from redis.asyncio.sentinel import Sentinel
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        from fastapi_tenancy.exceptions import ConfigurationError

        raise ConfigurationError(
            "redis_url is set but redis-py is not installed: "
            "pip install 'fastapi-tenancy-kit[redis]'"
        ) from exc
    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        # One immediate retry replaces a pooled connection that died with a Redis restart or a
        # failover. The default (several retries with backoff, timeouts too) would hold a request
        # for seconds while Redis is down, where callers should give up at once and fall back.
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }
    if target.topology == "server":
        return Redis.from_url(url, health_check_interval=HEALTH_CHECK_SECONDS, **options)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology == "sentinel":
        sentinels = Sentinel(  # type: ignore[no-untyped-call]  # redis-py lacks the hint
            list(target.nodes),
            sentinel_kwargs={**auth, "socket_timeout": timeout, "socket_connect_timeout": timeout},
            **auth,
            **options,
        )
        assert target.service is not None  # parse_redis_url requires it
        master: Redis = sentinels.master_for(
            target.service,
            redis_class=_sentinel_master_class(),
            db=target.db,
            health_check_interval=HEALTH_CHECK_SECONDS,
        )
        return master
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        # A cluster that lost a master keeps serving the slots it still has.
        require_full_coverage=False,
        **auth,
        **options,
    )


# How often a Sentinel client asks the sentinels where the master is, between failures.
FOLLOW_MASTER_SECONDS = 1.0


@functools.cache
def _sentinel_master_class() -> type[Redis]:
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import SentinelConnectionPool

    class SentinelMaster(Redis):
        """The master's client: follows failovers, and closes the sentinel connections too.

        After a failover the sentinels name the new master at once, but the old one keeps
        accepting writes until they reconfigure it (up to ten seconds later), and pooled
        connections to it stay open. So a background task asks the sentinels every second, and a
        changed answer closes every connection of the pool, so writes move to the new master
        within a second instead of splitting between two masters.
        """

        _follower: asyncio.Task[None] | None = None

        @property
        def sentinel_pool(self) -> SentinelConnectionPool:
            pool = self.connection_pool
            assert isinstance(pool, SentinelConnectionPool)  # master_for built it
            return pool

        async def execute_command(self, *args: Any, **options: Any) -> Any:
            if self._follower is None:
                self._follower = asyncio.create_task(
                    self._follow_master(), name="fastapi-tenancy-sentinel"
                )
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

        async def _follow_master(self) -> None:
            pool = self.sentinel_pool
            seen = pool.master_address
            while True:
                await asyncio.sleep(FOLLOW_MASTER_SECONDS)
                try:
                    await pool.get_master_address()  # type: ignore[no-untyped-call]
                    if seen is not None and pool.master_address != seen:
                        # Busy connections too: redis-py would return them to the pool still
                        # open to the old master. A command cut short is retried once.
                        await pool.disconnect(inuse_connections=True)
                except redis_failures() as exc:
                    if cancelling():  # a lost cancellation, not a failure: see _tasks
                        raise asyncio.CancelledError from exc
                    # no sentinel answers: commands fail on their own meanwhile
                seen = pool.master_address

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            follower, self._follower = self._follower, None
            await stop(follower, what="the Sentinel master follower")
            await super().aclose(close_connection_pool)
            for sentinel in self.sentinel_pool.sentinel_manager.sentinels:
                await sentinel.aclose()

    return SentinelMaster


def subscription_is_stale(client: Redis | RedisCluster, subscription: PubSub) -> bool:
    """Whether ``subscription`` sits on a Sentinel master that the sentinels no longer name.

    Its messages then stop arriving from processes that already write to the new master, so the
    subscriber should subscribe afresh. Always ``False`` on the other topologies.
    """
    from redis.asyncio.sentinel import SentinelConnectionPool

    pool = client.connection_pool if not is_cluster(client) else None  # type: ignore[union-attr]
    connection = subscription.connection
    if not isinstance(pool, SentinelConnectionPool) or connection is None:
        return False
    current = pool.master_address
    address = (getattr(connection, "host", None), getattr(connection, "port", None))
    return current is not None and address != current


def is_cluster(client: Redis | RedisCluster) -> bool:
    """Whether ``client`` talks to a Redis Cluster (keys used together then need one hash tag)."""
    from redis.asyncio import RedisCluster

    return isinstance(client, RedisCluster)


class pubsub:  # used like a function: ``async with pubsub(client) as subscription``
    """A pub/sub connection for ``client``, closed (with any client opened for it) on exit.

    On a single server or a Sentinel master it is ``client.pubsub()``. On a cluster it is a plain
    connection to one node chosen at random (published messages reach every node), with the
    cluster's credentials and timeouts.
    """

    def __init__(self, client: Redis | RedisCluster) -> None:
        self._client = client
        self._own: Redis | None = None
        self._pubsub: PubSub | None = None

    async def __aenter__(self) -> PubSub:
        if not is_cluster(self._client):
            self._pubsub = self._client.pubsub()
            return self._pubsub
        from redis.asyncio import Redis

        cluster: RedisCluster = self._client  # type: ignore[assignment]
        if not cluster.get_nodes():
            await cluster.initialize()
        node = random.choice(cluster.get_nodes())
        wanted = {
            "username",
            "password",
            "socket_timeout",
            "socket_connect_timeout",
            "decode_responses",
            "retry",
            "ssl",
        }
        kwargs = {k: v for k, v in node.connection_kwargs.items() if k in wanted}
        self._own = Redis(host=node.host, port=int(node.port), **kwargs)
        self._pubsub = self._own.pubsub()
        return self._pubsub

    async def __aexit__(self, *exc: object) -> None:
        from redis.exceptions import RedisError

        pubsub_, own = self._pubsub, self._own
        self._pubsub = self._own = None
        try:
            if pubsub_ is not None:
                await pubsub_.aclose()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
        except (RedisError, OSError):
            pass
        if own is not None:
            try:
                await own.aclose()
            except (RedisError, OSError):
                pass


def redis_failures() -> tuple[type[BaseException], ...]:
    """What a Redis outage or failover can raise: redis-py's errors, OS socket errors, timeouts."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, asyncio.TimeoutError)

"""Real Redis topologies on loopback: a 3-master Cluster and a Sentinel group, started per test.

Every server is a ``redis-server`` (``--sentinel`` for the sentinels) from the Debian package, on
free ports picked at runtime, in a temporary folder, with persistence off; the context managers
kill them all on exit. Timeouts are short (a node or master is judged down after 1 s) so a
failover completes in a few seconds.

Example::

    with RedisSentinelGroup() as group:
        config = TenancyConfig(redis_url=group.url, ...)
        group.failover()            # SENTINEL FAILOVER; returns once the replica is master
        group.kill_master()         # a crash: the sentinels promote the replica

    with RedisClusterNodes() as cluster:
        config = TenancyConfig(redis_url=cluster.url, ...)
        cluster.kill_master_of("some-key")   # its replica takes over the slots
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import redis

from tests.support.polling import until
from tests.support.services import redis_binary

__all__ = ["REDIS_TOPOLOGIES", "RedisClusterNodes", "RedisSentinelGroup", "redis_binary"]

# The backend table for tests that run over every Redis topology, through the ``redis_any_url``
# fixture (tests/conftest.py): the shared test Redis, a Sentinel group and a Cluster.
REDIS_TOPOLOGIES = [
    pytest.param("server", id="redis", marks=pytest.mark.redis),
    pytest.param("sentinel", id="sentinel", marks=pytest.mark.redis_sentinel),
    pytest.param("cluster", id="cluster", marks=pytest.mark.redis_cluster),
]

# A node or master that does not answer for this long is judged down (cluster and sentinel).
DOWN_AFTER_MS = 1000
READY_SECONDS = 30.0
POLL_SECONDS = 0.05
SERVICE = "mymaster"
# A node that is starting, or restarting its replication, refuses or drops connections meanwhile.
_NOT_YET = (redis.RedisError, OSError)
# A master waits 5 s (Redis' default) for more replicas before a diskless full sync: every replica
# here joins alone, so the wait only delays each topology's start and every failover's resync.
# CLUSTER SLOTS lists a replica once its replication offset is above zero, which on an idle master
# happens at the master's first ping to its replicas (every 10 s by default).
DATA_NODE = ("--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1")


# Ports handed out in this process, cluster bus ports included: servers start after all their
# ports are picked, so a port free at its probe may be another node's bus port a moment later.
_HANDED_OUT: set[int] = set()


def _free_port(*, bus: bool = False) -> int:
    """A free loopback port; with ``bus``, port + 10000 (the cluster bus) is free too.

    Never one handed out before in this process, as a port or as a bus port.
    """
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        wanted = {port, port + 10000} if bus else {port}
        if wanted & _HANDED_OUT or port + 10000 in _HANDED_OUT or port - 10000 in _HANDED_OUT:
            continue
        if bus:
            if port + 10000 >= 65536:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
        _HANDED_OUT.update(wanted)
        return port


def _until(what: str, check: Callable[[], object]) -> None:
    until(check, within=READY_SECONDS, every=POLL_SECONDS, what=what, ignoring=_NOT_YET)


def _command(client: redis.Redis, *arguments: str) -> Any:
    return client.execute_command(*arguments)  # type: ignore[no-untyped-call]  # no hint


class _Servers:
    """Processes of one topology, in one temporary folder, all killed on exit."""

    def __init__(self) -> None:
        self._binary = redis_binary()
        self._folder = Path(tempfile.mkdtemp(prefix="tenancy-redis-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    def _start(self, port: int, *arguments: str, config: str | None = None) -> None:
        command = [self._binary]
        if config is not None:
            path = self._folder / f"{port}.conf"
            path.write_text(config)
            command.append(str(path))
        command += [
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(self._folder), "--logfile", str(self._folder / f"{port}.log")),
            *arguments,
        ]
        self.processes[port] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _until(f"redis-server on {port}", lambda: self.client(port).ping())

    def client(self, port: int) -> redis.Redis:
        """An admin connection to the server on ``port`` (kept until it is killed)."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True, protocol=2
            )
        return self._clients[port]

    def kill(self, port: int) -> None:
        """Kill one server as a crash would (no clean shutdown)."""
        client = self._clients.pop(port, None)
        if client is not None:
            client.close()
        process = self.processes.pop(port, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        for client in self._clients.values():
            client.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError


class RedisSentinelGroup(_Servers):
    """One master, one replica and three sentinels (quorum 2) watching the service ``mymaster``."""

    def __init__(self) -> None:
        super().__init__()
        self.data_ports = [_free_port(), _free_port()]
        self.sentinel_ports = [_free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` over the three sentinels."""
        locations = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{locations}/{SERVICE}"

    def start(self) -> None:
        master, replica = self.data_ports
        self._start(master, *DATA_NODE)
        self._start(replica, *DATA_NODE, "--replicaof", "127.0.0.1", str(master))
        for port in self.sentinel_ports:
            config = "\n".join(
                [
                    f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} 5000",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
            self._start(port, "--sentinel", config=config)
        _until("the replica to sync", lambda: self._replica_synced(replica))
        _until("the sentinels to see the replica and each other", self._sentinels_ready)

    def _replica_synced(self, port: int) -> bool:
        info = self.client(port).info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            client = self.client(port)
            if not _command(client, "SENTINEL", "REPLICAS", SERVICE):
                return False
            if len(_command(client, "SENTINEL", "SENTINELS", SERVICE)) < 2:
                return False
        return True

    def master_port(self) -> int:
        """The master's port, as the first sentinel reports it."""
        address = _command(
            self.client(self.sentinel_ports[0]), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
        )
        return int(address[1])

    def _promoted(self, old: int) -> bool:
        new = self.master_port()
        if new == old or new not in self.processes:
            return False
        # A live old master stays one until the sentinels reconfigure it (up to ten seconds
        # later): clients must follow the sentinels' answer, not wait for that.
        return bool(self.client(new).info("replication")["role"] == "master")

    def app_connections(self, port: int) -> int:
        """Connections to the server on ``port`` other than sentinels, replicas and this admin."""
        client = self.client(port)
        own = client.client_id()
        return sum(
            1
            for entry in client.client_list()
            if int(entry["id"]) != own
            and not entry.get("name", "").startswith("sentinel-")
            and "S" not in entry.get("flags", "")  # a replica's link
            and "M" not in entry.get("flags", "")
        )

    def failover(self) -> float:
        """``SENTINEL FAILOVER``: the seconds until the sentinels name the replica as master."""
        old = self.master_port()
        started = time.monotonic()
        _command(self.client(self.sentinel_ports[0]), "SENTINEL", "FAILOVER", SERVICE)
        _until("the failover", lambda: self._promoted(old))
        return time.monotonic() - started

    def kill_master(self) -> float:
        """Crash the master; the seconds until the sentinels promoted the replica."""
        old = self.master_port()
        started = time.monotonic()
        self.kill(old)
        _until("the sentinels to promote the replica", lambda: self._promoted(old))
        return time.monotonic() - started


class RedisClusterNodes(_Servers):
    """A Redis Cluster of three masters, each with one replica, all 16384 slots covered."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        super().__init__()
        self.ports = [_free_port(bus=True) for _ in range(masters * (1 + replicas))]
        self._replicas = replicas

    @property
    def url(self) -> str:
        """``redis+cluster://`` listing every node (any one would do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        for port in self.ports:
            self._start(
                port,
                *DATA_NODE,
                *("--cluster-enabled", "yes", "--cluster-node-timeout", str(DOWN_AFTER_MS)),
                *("--cluster-config-file", str(self._folder / f"nodes-{port}.conf")),
            )
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self._replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _until("the cluster to form", self._formed)

    def _formed(self) -> bool:
        for port in self.processes:
            client = self.client(port)
            if client.cluster("info")["cluster_state"] != "ok":
                return False
            if len(client.cluster("nodes")) != len(self.processes):
                return False
            info = client.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        # Every slot range lists its master and, once they joined, its replicas.
        ranges = self.client(self.ports[0]).cluster("slots")
        return all(len(entry) >= 3 + self._replicas for entry in ranges)

    def subscriber_ports(self) -> list[int]:
        """The nodes holding a pub/sub subscription of some client right now."""
        return [
            port
            for port in self.processes
            if any(int(entry.get("sub", 0)) > 0 for entry in self.client(port).client_list())
        ]

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        client = self.client(next(iter(self.processes)))
        slot = client.cluster("keyslot", key)
        for start, end, master, *_ in client.cluster("slots"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(f"no node serves slot {slot}")

    def kill_master_of(self, key: str) -> float:
        """Crash the master of ``key``'s slot; the seconds until its replica took the slot."""
        old = self.master_of(key)
        started = time.monotonic()
        self.kill(old)

        def promoted() -> bool:
            for port in self.processes:
                client = self.client(port)
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
            return self.master_of(key) != old

        _until("a replica to take over the slot", promoted)
        return time.monotonic() - started

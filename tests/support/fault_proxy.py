"""`FaultProxy`: a TCP proxy between the app and a real server that fails on command.

The app connects to the proxy's port instead of the server's; the proxy forwards bytes both ways
until a test injects a fault:

* `refuse` closes the listening socket, so new connections are refused (``ECONNREFUSED``) the way
  they are when the server is down; live connections keep working;
* `cut` aborts every live connection at once, the way a server restart or a network failure does;
* `pause` blackholes traffic: new connections are accepted but not forwarded, and bytes on live
  connections are held back, the way a stalled network looks;
* `hang_up` accepts new connections and closes them at once, the way a connection cut during the
  handshake looks; live connections keep working;
* `greet_with_postgres_error` answers each new connection's start-up message with a PostgreSQL
  error, the way a server that is starting up (57P03) or out of slots (53300) refuses;
* `restore` undoes all of them: the port listens again, new connections are forwarded, held
  bytes flow.

The shared servers are never touched: only connections that go through the proxy are affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Self

from sqlalchemy.engine import make_url

__all__ = ["FaultProxy"]

CHUNK = 65536
# PostgreSQL's SSLRequest and GSSENCRequest codes: a client may send one before its start-up.
_PG_ENCRYPTION_REQUESTS = {80877103, 80877104}


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` until told to fail.

    Example::

        async with FaultProxy("127.0.0.1", 5432) as proxy:
            engine = create_async_engine(proxy.url_for(POSTGRES_URL))
            proxy.cut()          # every live connection drops
            await proxy.refuse() # new connections are refused
            await proxy.restore()
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._hanging_up = False
        self._greeting: bytes | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # How many connections the proxy has accepted and cut, for the tests' own checks.
        self.accepted = 0
        self.cuts = 0

    @classmethod
    def for_url(cls, url: str, default_port: int) -> FaultProxy:
        """A proxy in front of the server that the SQLAlchemy or Redis ``url`` names."""
        host, port = _host_port(url, default_port)
        return cls(host, port)

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        if url.startswith(("redis://", "rediss://")):
            scheme, rest = url.split("://", 1)
            credentials, _, path = rest.partition("/")
            auth = credentials.rsplit("@", 1)[0] + "@" if "@" in credentials else ""
            return f"{scheme}://{auth}127.0.0.1:{self.port}/{path}"
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        return parsed.render_as_string(hide_password=False)

    async def start(self) -> None:
        """Listen on a free port (or the port used before, after `refuse`)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        await self._stop_listening()
        self._flowing.set()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def refuse(self) -> None:
        """Refuse new connections; live ones keep working until `cut`."""
        await self._stop_listening()

    def cut(self) -> None:
        """Abort every live connection on both sides, seen by the peers at once.

        ``transport.abort`` closes its socket only on the event loop's next turn, and a test
        calling the app right after `cut` may not give it one: the app would then use a
        connection whose end is still in this process, a window a server restart (another
        process) does not leave. Shutting the sockets down first sends the end now.
        """
        for client, upstream in list(self._links):
            for transport in (client.transport, upstream.transport):
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                transport.abort()
            self.cuts += 1
        self._links.clear()

    def pause(self) -> None:
        """Hold every byte and every new connection until `restore`."""
        self._flowing.clear()

    def hang_up(self) -> None:
        """Close every new connection as soon as it is accepted; live ones keep working."""
        self._hanging_up = True

    def greet_with_postgres_error(self, sqlstate: str, message: str) -> None:
        """Refuse every new connection with a PostgreSQL ``FATAL`` error, as the server does."""
        fields = b"".join(
            code + value.encode() + b"\0"
            for code, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
        )
        body = fields + b"\0"
        self._greeting = b"E" + struct.pack("!I", len(body) + 4) + body

    async def restore(self) -> None:
        """Accept and forward again."""
        self._hanging_up = False
        self._greeting = None
        if self._server is None:
            await self.start()
        self._flowing.set()

    @property
    def live_connections(self) -> int:
        return len(self._links)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # `close` cancels connections held by `pause`; asyncio's stream callback would report
            # a cancelled handler task as an error.
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._hanging_up:
            writer.transport.abort()
            return
        if self._greeting is not None:
            await self._greet(reader, writer, self._greeting)
            return
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()

    @staticmethod
    async def _greet(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: bytes
    ) -> None:
        # Read the start-up message (declining encryption first if asked), then refuse.
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                payload = await reader.readexactly(length - 4)
                if length == 8 and struct.unpack("!I", payload)[0] in _PG_ENCRYPTION_REQUESTS:
                    writer.write(b"N")
                    await writer.drain()
                    continue
                writer.write(greeting)
                await writer.drain()
                break
        writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        # One side hung up: so does the other, as a real connection would.
        writer.transport.abort()


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    if url.startswith(("redis://", "rediss://")):
        location = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port = location.partition(":")
        return host or "127.0.0.1", int(port or default_port)
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or default_port

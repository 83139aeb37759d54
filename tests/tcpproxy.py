"""A loopback TCP relay whose connections a test can cut: a network failure, for real.

One job: forward bytes between clients and a server (here: Mosquitto) and, on ``cut()``,
reset every relayed connection at once, the way a dead process or a pulled cable looks to
the broker: no MQTT DISCONNECT is sent, so the broker publishes the client's last will.
``block()`` stops listening, so new connections are refused, until ``unblock()`` listens on the
same port again (a peer that stays gone, then comes back).
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Relays 127.0.0.1:<port> to ``target_host:target_port``; start with ``await start()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.blocked = False
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side gone: drop both (a relay never half-closes).
            for w in pair:
                _abort(w)
            self._pairs.discard(pair)

    def cut(self) -> None:
        """Reset every relayed connection now (both directions, no FIN, no DISCONNECT)."""
        for pair in list(self._pairs):
            for w in pair:
                _abort(w)
        self._pairs.clear()

    async def block(self) -> None:
        """Stop listening: connection attempts are refused at once (ECONNREFUSED)."""
        self.blocked = True
        server, self._server = self._server, None
        if server is not None:
            # close() shuts the listening socket at once; wait_closed() would also wait for the
            # relayed connections (Python >= 3.12), which a blocked relay keeps until cut().
            server.close()

    async def unblock(self) -> None:
        """Listen on the same port again."""
        self.blocked = False
        await self.start()

    async def close(self) -> None:
        self.cut()
        await self.block()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()

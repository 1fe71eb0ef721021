"""A TCP proxy in front of a real server, switchable between three behaviours.

- `forward`: every connection is relayed to the target, both ways.
- `blackhole`: the proxy keeps accepting connections and reading what clients
  send, but relays nothing and answers nothing (a server that accepts
  connections but never answers). Connections that were open stall too.
- `refuse`: the port is closed (connections are refused) and every open
  connection is reset.

Leaving `blackhole` closes the connections it stalled (as a server that hung
and was restarted would), so the client has to notice and reconnect.

It runs its own event loop in a thread, so both synchronous tests and apps
served in other threads can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Mode = Literal["forward", "blackhole", "refuse"]
CHUNK = 65536


class _Link:
    """One client connection, and the target connection it is relayed to (if any)."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.target: asyncio.StreamWriter | None = None
        self.stalled = False
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.port = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # Control (from any thread) ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def set_mode(self, mode: Mode) -> None:
        self._call(self._switch(mode))

    def close(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # In the proxy's loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        await self._switch("refuse")
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _switch(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if mode == "blackhole":
            for link in self._links:
                link.stalled = True
        elif mode == "refuse":
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for link in list(self._links):
                link.abort()
        if previous == "blackhole":
            for link in [link for link in self._links if link.stalled]:
                link.abort()
        if previous == "refuse" and mode != "refuse":
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A cancelled handler (at close) ends quietly: asyncio logs any other end as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.mode == "blackhole":
                link.stalled = True
                await self._swallow(reader)
                return
            try:
                target_reader, link.target = await asyncio.open_connection(*self.target)
            except OSError:
                return
            link.tasks = [
                asyncio.create_task(self._pipe(reader, link.target, link)),
                asyncio.create_task(self._pipe(target_reader, writer, link)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            link.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(CHUNK):
                if link.stalled:
                    continue  # read and dropped: the sender's kernel sees it acknowledged
                writer.write(data)
                await writer.drain()
        link.abort()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(CHUNK):
                pass


@contextmanager
def tcp_proxy(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()

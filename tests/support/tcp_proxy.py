"""A loopback TCP proxy whose "network" can be lost and found again, for reconnect tests.

While lost, nothing gets through in either direction and nobody hears of a close,
the way a tunnel or a network change looks to both ends. When the network comes
back, the connections of before are dead (closed towards the client), and new
ones work.
"""

from __future__ import annotations

import asyncio
import contextlib


class LossyProxy:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lost = False
        self._found = asyncio.Event()  # set when a lost network comes back
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LossyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def lose(self) -> None:
        self._lost = True
        self._found = asyncio.Event()

    def restore(self) -> None:
        """The network is back: old connections are dead, new ones get through."""
        self._lost = False
        self._found.set()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.restore()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter):
        if self._lost:
            client.transport.abort()
            return
        server_reader, server = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers |= {client, server}
        await asyncio.gather(self._pipe(client_reader, server), self._pipe(server_reader, client))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self._lost:
                    continue  # swallowed by the tunnel
                writer.write(data)
                await writer.drain()
            if not self._lost:
                writer.close()  # an orderly close gets through while the network works
            else:
                await self._found.wait()  # lost: the other end never hears of it

"""Two real Socket.IO clients behind one small interface, so tests can run against both.

``PythonClient`` is python-socketio's ``AsyncClient``; ``NodeClient`` is the npm
``socket.io-client`` 4.x running in Node (the library browsers use). Both record
every event they receive, in order, and return acknowledgements as argument lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import socketio

BRIDGE = Path(__file__).with_name("node_bridge.mjs")
DEFAULT_TIMEOUT = 10.0


class RecordingClient:
    """Event log plus waiting helpers; subclasses provide the transport."""

    def __init__(self) -> None:
        self.events: list[tuple[str, list[Any]]] = []
        self._changed = asyncio.Event()
        self.sid: str | None = None

    def _record(self, event: str, args: list[Any]) -> None:
        """Log an event synchronously, in the order the transport delivered it."""
        self.events.append((event, args))
        self._changed.set()

    def received(self, event: str) -> list[list[Any]]:
        """Argument lists of every ``event`` received so far."""
        return [args for name, args in self.events if name == event]

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def wait_for(
        self,
        event: str,
        count: int = 1,
        *,
        where: Callable[[list[Any]], bool] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Any]:
        """Wait until ``count`` matching ``event`` arrived; returns the last one's arguments."""

        def matching() -> list[list[Any]]:
            return [args for args in self.received(event) if where is None or where(args)]

        async def arrived() -> None:
            while len(matching()) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(arrived(), timeout)
        return matching()[count - 1]

    async def connect(self, url: str) -> RecordingClient:
        raise NotImplementedError

    async def call(self, event: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        """Emit with an acknowledgement callback; returns the ack's arguments.

        The ack is also logged, as event ``ack:<event>``, so tests can check ordering.
        """
        raise NotImplementedError

    async def emit(self, event: str, *args: Any) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class PythonClient(RecordingClient):
    """python-socketio's AsyncClient."""

    kind = "python"

    def __init__(self, transports: list[str] | None = None) -> None:
        super().__init__()
        self._transports = transports
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._on_any)

    def _on_any(self, event: str, *args: Any) -> None:
        self._record(event, list(args))

    async def connect(self, url: str) -> PythonClient:
        await self.sio.connect(url, transports=self._transports, wait_timeout=10)
        self.sid = self.sio.get_sid()
        return self

    async def call(self, event: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def on_ack(*ack_args: Any) -> None:
            self._record(f"ack:{event}", list(ack_args))
            if not reply.done():
                reply.set_result(list(ack_args))

        await self.sio.emit(event, tuple(args), callback=on_ack)
        return await asyncio.wait_for(reply, timeout)

    async def emit(self, event: str, *args: Any) -> None:
        await self.sio.emit(event, tuple(args))

    async def close(self) -> None:
        await self.sio.disconnect()


class NodeClient(RecordingClient):
    """The npm socket.io-client 4.x in a Node process, driven over stdin/stdout."""

    kind = "node"

    def __init__(self) -> None:
        super().__init__()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future[list[Any]]] = {}
        self._connected: asyncio.Future[str] | None = None

    async def connect(self, url: str) -> NodeClient:
        self._connected = asyncio.get_running_loop().create_future()
        self._process = await asyncio.create_subprocess_exec(
            "node",
            str(BRIDGE),
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        self.sid = await asyncio.wait_for(self._connected, DEFAULT_TIMEOUT)
        return self

    async def _read(self) -> None:
        assert self._process and self._process.stdout
        async for line in self._process.stdout:
            message = json.loads(line)
            kind = message["type"]
            if kind == "connect" and self._connected and not self._connected.done():
                self._connected.set_result(message["id"])
            elif kind == "connect_error" and self._connected and not self._connected.done():
                self._connected.set_exception(ConnectionError(message["message"]))
            elif kind == "event":
                self._record(message["event"], message["args"])
            elif kind == "ack":
                self._record(f"ack:{message['event']}", message["args"])
                future = self._acks.pop(message["id"], None)
                if future and not future.done():
                    future.set_result(message["args"])
            elif kind == "disconnect":
                self._record("disconnect", [message["reason"]])

    def _send(self, command: dict[str, Any]) -> None:
        assert self._process and self._process.stdin
        self._process.stdin.write((json.dumps(command) + "\n").encode())

    async def call(self, event: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        command_id = next(self._ids)
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._acks[command_id] = reply
        self._send(
            {"id": command_id, "op": "emit", "event": event, "args": list(args), "ack": True}
        )
        return await asyncio.wait_for(reply, timeout)

    async def emit(self, event: str, *args: Any) -> None:
        self._send({"id": next(self._ids), "op": "emit", "event": event, "args": list(args)})

    async def close(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send({"op": "close"})
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


CLIENT_KINDS: dict[str, type[RecordingClient]] = {"python": PythonClient, "node": NodeClient}

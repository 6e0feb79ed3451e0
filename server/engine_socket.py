"""engine.io's WebSocket transport without a task or a timer per message.

python-engineio (4.x) pays, for every message a WebSocket client sends, a new
task and an ``asyncio.wait_for`` timer around the read; for every batch it
writes, another ``wait_for``; for every heartbeat, a task that sleeps; and its
service task wakes once per connection per ``ping_timeout`` to check pongs (a
``wait_for`` each). Under bench/signaling_bench.py that machinery was a large
share of the server's CPU per relayed message, and most of its CPU while it
merely held 10,000 idle connections.

:class:`LeanSocket` keeps engine.io's protocol as it is (the server pings every
``ping_interval``; a client that has not answered within ``ping_timeout`` is
gone; ``CLOSE`` on a server close) and its session fields (``queue``,
``last_ping``, ``closing``/``closed``), which python-socketio and roomrelay read.
What changes is the bookkeeping:

- a ping is one ``call_later`` per interval, no task, and pings go out on that
  schedule whether or not the last one was answered yet: a client on an
  overloaded server keeps hearing them (engine.io waits for each pong first, so
  a pong stuck in the server's own read backlog made every client time out);
- each outstanding ping arms one ``call_later`` for its pong's deadline (engine.io
  visits every session from its service task); a client the server is still
  reading from is alive, since its pong may wait behind its other messages;
- the WebSocket read loop awaits the socket directly, hands Socket.IO messages
  to the application without re-parsing them, and yields to the loop only when
  more of the same client's messages are already buffered (the fairness engine.io's
  task per read gave, without a turn of the loop for every message);
- a packet sent on an upgraded WebSocket is written to aiohttp's transport at once
  (one synchronous call) whenever nothing is queued before it and the transport
  is not applying back-pressure; only then does it go through the queue, whose
  writer task waits without a timeout (the read loop or a close always ends it).
  Relaying a message thus costs the sending client's read and nothing else: no
  wake-up of the recipient's writer task, no coroutine per write.

engine.io builds its socket objects itself, with no factory to override, so the
server promotes each new session to :class:`LeanSocket` at connect, before any
transport runs on it. :func:`check_engineio_internals` fails fast at startup if
an upgrade of python-engineio moved what this relies on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
import time
from typing import Any

import engineio
from aiohttp import web
from aiohttp._websocket import reader as aiohttp_ws_reader
from aiohttp._websocket import writer as aiohttp_ws_writer
from engineio import async_socket, exceptions, packet
from engineio.async_drivers import aiohttp as aiohttp_driver

logger = logging.getLogger(__name__)


class EngineIoInternalsChanged(RuntimeError):
    """The installed python-engineio lacks an internal this server relies on."""


class LeanSocket(async_socket.AsyncSocket):
    """One engine.io session; see the module docstring for what differs from engine.io's."""

    last_ping: float | None  # engine.io's: when the oldest unanswered ping went out
    connected: bool
    upgraded: bool
    heard_at = 0.0  # when the WebSocket read loop last took a message from the client
    _next_ping: asyncio.TimerHandle | None = None
    _pong_due: asyncio.TimerHandle | None = None
    _closing_silent: asyncio.Future[None] | None = None
    _response: web.WebSocketResponse | None = None  # while its writer task runs
    _writing = False  # the writer task is in a write that may wait for the transport

    # -- heartbeat ---------------------------------------------------------------------------

    def schedule_ping(self) -> None:
        """Every ping so far is answered (engine.io calls this at connect and on each pong)."""
        self.last_ping = None
        if self._next_ping is None and not (self.closing or self.closed):
            self._next_ping = asyncio.get_running_loop().call_later(
                self.server.ping_interval, self._ping
            )

    def _ping(self) -> None:
        """A ping every interval, answered or not: a client must hear one in time even while
        its pongs wait behind its other messages in a busy server's read backlog."""
        self._next_ping = None
        if self.closing or self.closed:
            return
        loop = asyncio.get_running_loop()
        if self.last_ping is None:  # a new outstanding ping: it has ping_timeout to come back
            self.last_ping = time.time()
            if self._pong_due is None:
                self._pong_due = loop.call_later(self.server.ping_timeout, self._pong_deadline)
        self.put(packet.Packet(packet.PING))
        self._next_ping = loop.call_later(self.server.ping_interval, self._ping)

    def _pong_deadline(self) -> None:
        """Close the session if the client has been silent for ``ping_timeout`` since a ping
        it has not answered. Anything heard from it counts: a pong may be queued behind
        messages the server has yet to read."""
        self._pong_due = None
        if self.closing or self.closed or self.last_ping is None:
            return
        timeout = self.server.ping_timeout
        remaining = max(self.last_ping, self.heard_at) + timeout - time.time()
        if remaining > 0:
            self._pong_due = asyncio.get_running_loop().call_later(remaining, self._pong_deadline)
            return
        logger.info("%s: no pong within %s s; closing", self.sid, timeout)
        self._closing_silent = asyncio.ensure_future(
            self.close(wait=False, reason=self.server.reason.PING_TIMEOUT)
        )

    # -- sending -----------------------------------------------------------------------------

    async def send(self, pkt: packet.Packet) -> None:
        """engine.io's API for :meth:`put` (the queue is unbounded; fanout.py caps it)."""
        if self.closed:
            raise exceptions.SocketIsClosedError()
        self.put(pkt)

    def put(self, pkt: packet.Packet) -> None:
        """Write ``pkt`` to the WebSocket now if nothing waits before it, else queue it."""
        response = self._response
        if response is None or self._writing or self.queue.qsize() or not write_now(response, pkt):
            self.queue.put_nowait(pkt)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        was_open = not (self.closing or self.closed)
        if self._next_ping is not None:
            self._next_ping.cancel()
            self._next_ping = None
        await super().close(wait=wait, abort=abort, reason=reason)
        if was_open and self.upgraded:
            # The writer ends after what is queued (the CLOSE packet) and closes the
            # WebSocket, which ends the read loop even if the client is silent.
            self.queue.put_nowait(None)

    # -- WebSocket transport -----------------------------------------------------------------

    async def _websocket_handler(self, ws: Any) -> None:
        if self.connected:  # long-polling until now: this WebSocket is an upgrade
            if not await self._finish_upgrade(ws):
                return
        else:
            self.connected = True
            self.upgraded = True
        writer = asyncio.ensure_future(self._write_to(ws))
        try:
            await self._read_from(ws)
        finally:
            self.queue.put_nowait(None)
            await writer
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    async def _finish_upgrade(self, ws: Any) -> bool:
        """engine.io's upgrade: ping "probe" → pong "probe", then UPGRADE on the new transport."""
        self.upgrading = True  # engine.io holds long-poll sends meanwhile
        try:
            probe = packet.Packet(encoded_packet=await ws.wait())
            if probe.packet_type != packet.PING or probe.data != "probe":
                logger.info("%s: upgrade without a probe; staying on long-polling", self.sid)
                return False
            await ws.send(packet.Packet(packet.PONG, data="probe").encode())
            self.queue.put_nowait(packet.Packet(packet.NOOP))  # ends the pending long-poll
            confirmed = packet.Packet(encoded_packet=await ws.wait())
            if confirmed.packet_type != packet.UPGRADE:
                logger.info("%s: upgrade not confirmed; staying on long-polling", self.sid)
                return False
            self.upgraded = True
            return True
        except (OSError, ValueError):
            return False
        finally:
            self.upgrading = False

    async def _read_from(self, ws: Any) -> None:
        """Hand each message to the application in order, until the WebSocket ends."""
        limit = self.server.max_http_buffer_size
        while True:
            try:
                data = await ws.wait()
            except (OSError, ValueError, RuntimeError):
                return  # closed, or a frame aiohttp refused (too large, not UTF-8)
            self.heard_at = time.time()
            if data is None or len(data) > limit:
                return
            try:
                if isinstance(data, str) and data[:1] == "4" and data[1:2].isdigit():
                    await self._deliver(data[1:])  # a Socket.IO packet: the common case
                else:
                    await self.receive(packet.Packet(encoded_packet=data))
            except exceptions.SocketIsClosedError:
                return
            except (exceptions.UnknownPacketError, ValueError, IndexError):
                logger.info("%s: dropped an engine.io packet it could not decode", self.sid)
            if has_buffered(ws._sock):
                # One message per connection per turn of the loop, as engine.io's task per
                # read gave: one client's backlog must not hold up everyone else.
                await asyncio.sleep(0)

    async def _deliver(self, message: str) -> None:
        """What engine.io's ``receive`` does with a text MESSAGE, minus its per-packet logging."""
        if self.server.async_handlers:
            await self.server._trigger_event("message", self.sid, message, run_async=True)
            return
        handler = self.server.handlers.get("message")
        if handler is None:
            return
        try:
            await handler(self.sid, message)
        except Exception:
            logger.exception("%s: the message handler failed", self.sid)

    async def _write_to(self, ws: Any) -> None:
        """Write queued packets until a ``None`` (or a failed write), then close the WebSocket.

        Meanwhile :meth:`put` writes directly whenever the queue is empty and no write of
        this task waits for the transport, so the order of packets is kept.
        """
        queue = self.queue
        response = ws._sock  # aiohttp's WebSocketResponse
        self._response = response
        try:
            while True:
                pkt = await queue.get()
                queue.task_done()
                if pkt is None:
                    break
                encoded = pkt.encode()
                self._writing = True
                if isinstance(encoded, str):
                    await response.send_str(encoded)
                else:
                    await response.send_bytes(encoded)
                self._writing = False
        except (OSError, RuntimeError):
            pass  # the peer went away mid-write; the read loop sees the close
        finally:
            self._response = None
            while not queue.empty():  # nothing will send these: let close(wait=True) return
                queue.get_nowait()
                queue.task_done()
            await ws.close()


class OutgoingMessage(packet.Packet):
    """An engine.io MESSAGE whose WebSocket frame is built once, however many connections
    it is written to (a broadcast encodes once, not once per recipient)."""

    def __init__(self, text: str) -> None:
        super().__init__(packet.MESSAGE, text)
        self.frame = websocket_frame(self.encode())


def websocket_frame(encoded: str | bytes) -> bytes:
    """One unmasked, uncompressed, final WebSocket frame (RFC 6455 5.2) holding ``encoded``:
    a TEXT frame for a str, BINARY for bytes (what a server sends)."""
    if isinstance(encoded, str):
        payload, first_byte = encoded.encode(), 0x81  # FIN + TEXT
    else:
        payload, first_byte = encoded, 0x82  # FIN + BINARY
    length = len(payload)
    if length < 126:
        return bytes((first_byte, length)) + payload
    if length < 65536:
        return FRAME_HEADER_16(first_byte, 126, length) + payload
    return FRAME_HEADER_64(first_byte, 127, length) + payload


FRAME_HEADER_16 = struct.Struct("!BBH").pack
FRAME_HEADER_64 = struct.Struct("!BBQ").pack


def write_now(response: web.WebSocketResponse, pkt: packet.Packet) -> bool:
    """Write ``pkt`` as one WebSocket frame without waiting, if the transport takes it now.

    False when the frame would need compression or the transport is over its high-water
    mark (aiohttp's writer then waits for it to drain, so the caller queues instead).
    """
    writer = response._writer
    if writer is None or writer.compress or writer.protocol._paused:
        return False
    transport = writer.transport
    if transport.is_closing():
        return True  # the connection is closing: its read loop ends and cleans up
    frame = pkt.frame if isinstance(pkt, OutgoingMessage) else websocket_frame(pkt.encode())
    transport.write(frame)
    return True


def has_buffered(response: web.WebSocketResponse) -> bool:
    """Whether aiohttp has already read more messages of this WebSocket than were taken."""
    reader = response._reader
    return reader is not None and bool(reader._buffer)


class LeanEngineServer(engineio.AsyncServer):
    """engine.io's server, whose sessions are :class:`LeanSocket` (each checks its own pongs)."""

    def promote(self, sid: str) -> None:
        """Make a session created by engine.io a :class:`LeanSocket` (no state is added)."""
        connection = self.sockets.get(sid)
        if connection is not None and type(connection) is async_socket.AsyncSocket:
            connection.__class__ = LeanSocket

    async def _service_task(self) -> None:
        """Forget closed sessions now and then (each session checks its own pongs)."""
        self.service_task_event = self.create_event()
        while not self.service_task_event.is_set():
            for sid, connection in list(self.sockets.items()):
                if connection.closed:
                    self.sockets.pop(sid, None)
            try:
                await asyncio.wait_for(self.service_task_event.wait(), self.ping_timeout)
            except TimeoutError:
                continue


def aiohttp_internals_present() -> bool:
    """What :func:`write_now` and :func:`has_buffered` use of aiohttp's WebSocket internals."""
    writer_setup = inspect.getsource(aiohttp_ws_writer.WebSocketWriter.__init__)
    return (
        hasattr(web.WebSocketResponse, "_writer")
        and hasattr(web.WebSocketResponse, "_reader")
        and all(f"self.{name} =" in writer_setup for name in ("compress", "protocol", "transport"))
        and "_paused" in inspect.getsource(aiohttp_ws_writer.WebSocketWriter)
        and "_buffer" in dir(aiohttp_ws_reader.WebSocketDataQueue)
    )


def check_engineio_internals() -> None:
    """Raise :class:`EngineIoInternalsChanged` unless engine.io still works as assumed here."""
    connect = inspect.getsource(engineio.AsyncServer._handle_connect)
    expectations = {
        "AsyncServer._handle_connect builds async_socket.AsyncSocket, then triggers 'connect'": (
            connect.find("async_socket.AsyncSocket(") < connect.find("'connect'")
            and "s.schedule_ping()" in connect
        ),
        "AsyncServer._service_task, service_task_event": "service_task_event"
        in inspect.getsource(engineio.AsyncServer._service_task),
        "AsyncSocket._websocket_handler(ws), schedule_ping(), close(wait, abort, reason)": (
            list(inspect.signature(async_socket.AsyncSocket._websocket_handler).parameters)
            == ["self", "ws"]
            and list(inspect.signature(async_socket.AsyncSocket.close).parameters)
            == ["self", "wait", "abort", "reason"]
            and hasattr(async_socket.AsyncSocket, "schedule_ping")
        ),
        "the aiohttp driver's WebSocket._sock": "self._sock"
        in inspect.getsource(aiohttp_driver.WebSocket),
        "aiohttp's WebSocketResponse._writer/_reader, WebSocketWriter.compress/protocol/"
        "transport and its protocol's _paused": aiohttp_internals_present(),
    }
    missing = [name for name, present in expectations.items() if not present]
    if missing:
        raise EngineIoInternalsChanged(
            f"python-engineio {getattr(engineio, '__version__', '?')} changed: "
            + "; ".join(missing)
            + ". roomrelay's engine_socket.py needs updating."
        )

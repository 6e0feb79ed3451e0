"""python-socketio's server, hardened at the packet and session level.

- Binary events are refused as they are decoded: the server uses none, and
  python-socketio would otherwise buffer the attachments a header announces
  (``459999999999-[...]``) until they all arrive, with no limit.
- Malformed packets are dropped with a (rate-limited) warning instead of an
  exception in engine.io's read loop; a connection that keeps sending them
  (more than ``MALFORMED_BURST`` at once, or ``MALFORMED_RATE`` a second) is
  disconnected, since no real client does.
- Sessions are admitted at engine.io's connect by :class:`Admission` (global and
  per-address caps) before python-socketio keeps anything for them.
- A WebSocket that ends while the server's ping goes unanswered is reported as
  lost (``ping timeout``), not closed: engine.io calls both "transport close",
  and only a lost connection is worth holding for a resume (resumption.py).
- engine.io runs as :class:`LeanEngineServer` (engine_socket.py): no task or timer
  per message or per ping.
- An event for one of the server's own handlers on "/" is called directly, without
  python-socketio's per-event logging and its three layers of handler lookup:
  each relayed signalling message passes through here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import socketio
from socketio import packet

from .admission import Admission
from .engine_socket import LeanEngineServer, check_engineio_internals
from .packets import FastPacket
from .ratelimit import TokenBucket

logger = logging.getLogger(__name__)

MALFORMED_RATE = 5.0  # malformed packets per second a connection may send on average
MALFORMED_BURST = 50

BINARY_TYPES = (str(packet.BINARY_EVENT), str(packet.BINARY_ACK))
NAMESPACE = "/"
MAX_ACK_DIGITS = 15  # longer ack ids go to python-socketio's decoder (it refuses > 100)


class BinaryPacketRefused(ValueError):
    """A client sent a binary Socket.IO packet or attachment.

    For a binary event's header, ``packet`` is the decoded header (its event name
    and ack id), so the client can be told; its attachments are never awaited.
    """

    def __init__(self, message: str, header: packet.Packet | None = None) -> None:
        super().__init__(message)
        self.header = header


class TextOnlyPacket(FastPacket):
    """Our JSON packet (orjson), minus binary events and their attachments."""

    def decode(self, encoded_packet: Any) -> int:
        if not isinstance(encoded_packet, str):
            raise BinaryPacketRefused("binary messages are not accepted")
        attachments = super().decode(encoded_packet) or 0
        if encoded_packet[:1] in BINARY_TYPES or attachments:
            raise BinaryPacketRefused("binary events are not accepted", header=self)
        return 0


def plain_event(data: str | bytes) -> tuple[int | None, list[Any]] | None:
    """``(ack id, [event, *arguments])`` of a text EVENT packet to "/" (``2[...]`` or
    ``2<id>[...]``), or None for any other packet (python-socketio's decoder takes those).

    The common packet, parsed with one orjson call instead of a packet object.
    Bad JSON raises ValueError, as python-socketio's decoder does.
    """
    if not isinstance(data, str) or data[:1] != "2":
        return None
    start = 1
    while start < len(data) and start <= MAX_ACK_DIGITS and data[start].isdigit():
        start += 1
    if data[start : start + 1] != "[":
        return None
    arguments = orjson.loads(data[start:])
    if not arguments or not isinstance(arguments[0], str):
        return None
    return (int(data[1:start]) if start > 1 else None), arguments


def client_address(environ: dict[str, Any]) -> str:
    """The peer address of the HTTP request that opened a session.

    engine.io's aiohttp driver fills REMOTE_ADDR with a constant, so ask aiohttp.
    """
    request = environ.get("aiohttp.request")
    return (getattr(request, "remote", None) or environ.get("REMOTE_ADDR") or "?").lower()


class SocketServer(socketio.AsyncServer):
    """python-socketio's AsyncServer with the refusals described in the module docstring."""

    def __init__(self, admission: Admission, **kwargs: Any) -> None:
        super().__init__(serializer=TextOnlyPacket, **kwargs)
        self.admission = admission
        self._malformed: dict[str, TokenBucket] = {}
        self.malformed_disconnects = 0

    def _engineio_server_class(self) -> type[LeanEngineServer]:
        check_engineio_internals()  # fails at startup, not on the first connection
        return LeanEngineServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        address = client_address(environ)
        refusal = self.admission.admit(eio_sid, address, self.eio.sockets)
        if refusal is not None:
            logger.warning("refused a connection from %s: %s", address, refusal.reason)
            return refusal.message  # engine.io answers 401 with this message
        self.eio.promote(eio_sid)
        return await super()._handle_eio_connect(eio_sid, environ)

    def _lost_or_closed(self, eio_sid: str, reason: Any) -> Any:
        """``ping timeout`` for a transport that ended with our ping unanswered for a while."""
        if reason != self.reason.TRANSPORT_CLOSE:
            return reason
        connection = self.eio.sockets.get(eio_sid)
        ping_sent = getattr(connection, "last_ping", None)  # None once the pong came back
        if ping_sent is not None and time.time() - ping_sent >= self.eio.ping_timeout / 2:
            return self.reason.PING_TIMEOUT
        return reason

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        reason = self._lost_or_closed(eio_sid, reason)
        try:
            await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            self.admission.release(eio_sid)
            self._malformed.pop(eio_sid, None)

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        connection = self.eio.sockets.get(eio_sid)
        if connection is None or connection.closed:
            # Cut off (a slow reader, a ping timeout) while its last messages were on the
            # way: nobody can answer them, and a warning each would flood the log.
            return
        try:
            event = plain_event(data) if eio_sid not in self._binary_packet else None
            if event is not None:
                await self._handle_event(eio_sid, None, *event)
            else:
                await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # Our handlers catch their own errors (events.py), so this is a packet that
            # python-socketio could not decode: bad JSON, no event name, binary, and the like.
            logger.warning("dropped a malformed Socket.IO packet from %s: %r", eio_sid, exc)
            await self._count_malformed(eio_sid)
            if isinstance(exc, BinaryPacketRefused) and exc.header is not None:
                await self._refuse_binary_event(eio_sid, exc.header)

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]
    ) -> None:
        namespace = namespace or NAMESPACE
        event = data[0]
        handler = (
            self.handlers[namespace].get(event)
            if namespace == NAMESPACE
            and namespace in self.handlers
            and event not in self.reserved_events
            and not self.async_handlers
            else None
        )
        if handler is None:  # catch-all, other namespaces: python-socketio's own lookup
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return
        result = await handler(sid, *data[1:])
        if id is not None:
            await self._send_ack(eio_sid, namespace, id, result)

    async def _send_ack(self, eio_sid: str, namespace: str, id: int, result: Any) -> None:
        """python-socketio's ACK: a tuple is several arguments, None none."""
        if result is None:
            arguments = []
        elif isinstance(result, tuple):
            arguments = list(result)
        else:
            arguments = [result]
        reply = self.packet_class(packet.ACK, namespace=namespace, id=id, data=arguments)
        await self._send_packet(eio_sid, reply)

    async def _refuse_binary_event(self, eio_sid: str, header: packet.Packet) -> None:
        """Answer a binary event like any refused event: an ``error``, and the ack if asked."""
        namespace = header.namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or eio_sid not in self.eio.sockets:
            return
        data = header.data if isinstance(header.data, list) else []
        event = str(data[0])[:64] if data else "?"
        error = {
            "code": "bad_request",
            "message": "binary data is not supported; send JSON",
            "event": event,
        }
        await self.emit("error", error, to=sid, namespace=namespace)
        if header.id is not None:
            await self._send_ack(eio_sid, namespace, header.id, {"ok": False, "error": error})

    async def _count_malformed(self, eio_sid: str) -> None:
        if eio_sid not in self.eio.sockets:
            return  # already disconnected; its last packets are still draining
        bucket = self._malformed.setdefault(eio_sid, TokenBucket(MALFORMED_RATE, MALFORMED_BURST))
        if bucket.try_take():
            return
        logger.warning("disconnected %s: too many malformed packets", eio_sid)
        self.malformed_disconnects += 1
        await self.eio.disconnect(eio_sid)

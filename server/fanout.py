"""Socket.IO broadcasts without a task per recipient, and a bound on every send queue.

python-socketio's ``AsyncManager.emit`` encodes a broadcast once but then creates
one asyncio task per recipient to put the packet on that connection's engine.io
queue, and those queues are unbounded: a client that stops reading grows the
server's memory without limit. ``FanoutManager`` is python-socketio's supported
extension point (``AsyncServer(client_manager=...)``): it encodes each broadcast
once, queues it to every recipient in a plain loop (engine.io's ``send_packet``
only appends to an unbounded queue, so nothing is gained by a task each), and
disconnects a connection whose queue is full, telling it why.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from .engine_socket import OutgoingMessage
from .packets import event_text

logger = logging.getLogger(__name__)

NAMESPACE = "/"
SLOW_READER_REASON = "send queue full: the client is not reading its messages"
DEFAULT_MAX_QUEUED = 1000  # the MAX_QUEUED_MESSAGES default


def _arguments(data: Any) -> list[Any]:
    """python-socketio's convention: a tuple is several arguments, None is none."""
    if isinstance(data, tuple):
        return list(data)
    return [] if data is None else [data]


class FanoutManager(socketio.AsyncManager):
    """The default in-memory manager, with task-free broadcasts and bounded send queues."""

    def __init__(self, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        super().__init__()
        self.max_queued = max_queued
        self.slow_readers_disconnected = 0
        self._evicting: dict[str, asyncio.Task[None]] = {}  # by engine.io sid
        # Each connection's rooms (the None room of everyone and its own sid room included):
        # python-socketio scans every room to find them, so each disconnect cost O(rooms)
        # and stopping a server with 10,000 connections held the event loop for 15 s.
        self._rooms_of: dict[tuple[str, str], set[Any]] = {}

    # -- rooms by connection ------------------------------------------------------------------

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's, with the connection's rooms looked up instead of searched for."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None or namespace not in self.rooms:
            # Each recipient needs its own ack id; the stock path handles that.
            await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
            return
        packets = self._event_packets(namespace, event, _arguments(data))
        skipped = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        for sid, eio_sid in self.get_participants(namespace, to or room):
            if sid not in skipped:
                self._queue(sid, eio_sid, packets)

    async def send_event(self, recipients: list[tuple[str, str]], event: str, data: Any) -> None:
        """``event`` to each ``(sid, eio_sid)`` of namespace "/" on this node, encoded once.

        For callers that already know the recipients: no room lookup, no skip list.
        """
        packets = self._event_packets(NAMESPACE, event, _arguments(data))
        for sid, eio_sid in recipients:
            self._queue(sid, eio_sid, packets)

    def _event_packets(
        self, namespace: str, event: str, arguments: list[Any]
    ) -> list[eio_packet.Packet]:
        """The engine.io packets that carry one event: one, unless it has binary attachments."""
        text = event_text(event, arguments) if namespace == NAMESPACE else None
        if text is not None:
            return [OutgoingMessage(text)]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *arguments]
        ).encode()
        return [
            OutgoingMessage(part)
            if isinstance(part, str)
            else eio_packet.Packet(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]

    def _queue(self, sid: str, eio_sid: str, packets: list[eio_packet.Packet]) -> None:
        """Hand ``packets`` to one connection (written at once or queued, engine_socket.py),
        or disconnect it if its queue is full."""
        connection = self.server.eio.sockets.get(eio_sid)
        if connection is None or connection.closing or connection.closed:
            return  # gone, or on its way out: nothing will read it
        if eio_sid in self._evicting:
            return
        if connection.queue.qsize() + len(packets) > self.max_queued:
            self._evict(sid, eio_sid, connection)
            return
        put = getattr(connection, "put", connection.queue.put_nowait)  # engine.io's own: queue
        for pkt in packets:
            put(pkt)

    def _evict(self, sid: str, eio_sid: str, connection: Any) -> None:
        """Close a connection that does not read what it is sent."""
        self.slow_readers_disconnected += 1
        logger.warning(
            "disconnecting %s: %d messages queued and not read", sid, connection.queue.qsize()
        )
        task = asyncio.create_task(self._close_slow_reader(connection))
        self._evicting[eio_sid] = task
        task.add_done_callback(lambda _: self._evicting.pop(eio_sid, None))

    async def _close_slow_reader(self, connection: Any) -> None:
        """Replace the unread backlog with the reason, and close the connection."""
        queue = connection.queue
        while not queue.empty():
            queue.get_nowait()
            queue.task_done()
        error = self.server.packet_class(
            sio_packet.EVENT,
            namespace=NAMESPACE,
            data=["error", {"code": "too_slow", "message": SLOW_READER_REASON, "event": None}],
        )
        goodbye = self.server.packet_class(sio_packet.DISCONNECT, namespace=NAMESPACE)
        for pkt in (error, goodbye):
            queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, pkt.encode()))
        queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
        # abort=True: the CLOSE is queued above; the application's disconnect handler runs now.
        await connection.close(wait=False, abort=True, reason=SLOW_READER_REASON)
        queue.put_nowait(None)  # lets the websocket writer finish after the goodbye

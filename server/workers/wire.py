"""The front <-> worker wire: length-prefixed orjson messages over a local stream.

One message is a 4-byte big-endian length and an orjson object. Requests carry
``op`` (and ``id`` when the sender awaits a reply); replies carry ``reply``;
facts from a worker carry ``event``. The media core's values (slot lists,
close reasons, protocol errors) are encoded here, in one place.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from ..media.types import CloseReason, SlotInfo, UplinkQuality
from ..validation import ProtocolError

HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024  # a room's stats with every peer stays far below this

Message = dict[str, Any]


class WireClosed(ConnectionError):
    """The other side of the wire went away (exited or was killed)."""


def encode(message: Message) -> bytes:
    body = orjson.dumps(message)
    return HEADER.pack(len(body)) + body


def send(writer: asyncio.StreamWriter, message: Message) -> None:
    """Queue one message; never blocks (the stream buffers, messages are small)."""
    if writer.is_closing():
        raise WireClosed("the wire is closed")
    writer.write(encode(message))


async def receive(reader: asyncio.StreamReader) -> Message:
    """The next message; raises :class:`WireClosed` at the end of the stream."""
    try:
        header = await reader.readexactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        if length > MAX_MESSAGE:
            raise WireClosed(f"message of {length} bytes is over the limit")
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise WireClosed(str(exc) or "end of stream") from None
    message = orjson.loads(body)
    if not isinstance(message, dict):
        raise WireClosed("a message is not an object")
    return message


def error_to_wire(error: ProtocolError) -> Message:
    return {"code": error.code, "message": error.message}


def error_from_wire(data: Message) -> ProtocolError:
    return ProtocolError(str(data.get("code", "internal")), str(data.get("message", "")))


def slots_to_wire(slots: list[SlotInfo]) -> list[Message]:
    return [{"mid": s.mid, "kind": s.kind, "peer_id": s.peer_id, "source": s.source} for s in slots]


def slots_from_wire(data: list[Message]) -> list[SlotInfo]:
    return [
        SlotInfo(mid=s["mid"], kind=s["kind"], peer_id=s["peer_id"], source=s["source"])
        for s in data
    ]


def uplinks_to_wire(reports: list[UplinkQuality]) -> list[Message]:
    return [report.to_dict() for report in reports]


def uplinks_from_wire(data: list[Message]) -> list[UplinkQuality]:
    return [UplinkQuality(**report) for report in data]


def reason_from_wire(value: str) -> CloseReason:
    return CloseReason(value)

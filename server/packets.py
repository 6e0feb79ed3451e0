"""The Socket.IO packet class roomrelay gives python-socketio (its ``serializer`` option).

Two costs of the stock ``socketio.packet.Packet`` show up on the signalling path
(py-spy under bench/signaling_bench.py): every packet, incoming or outgoing, is
walked by ``data_is_binary``, which builds a list of every value and folds it,
and JSON goes through the standard library. This subclass walks with an early
exit and encodes/decodes with orjson; the wire format is unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from socketio import packet

ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class OrjsonModule:
    """The ``json``-module interface python-socketio calls, backed by orjson."""

    @staticmethod
    def dumps(value: Any, **_options: Any) -> str:
        # python-socketio asks for compact separators, which is orjson's only form.
        try:
            return orjson.dumps(value, option=ORJSON_OPTIONS).decode()
        except TypeError:
            # What orjson refuses and the standard library takes (float subclasses,
            # integers beyond 64 bits): encode it exactly as python-socketio would have.
            return json.dumps(value, separators=(",", ":"))

    @staticmethod
    def loads(text: str | bytes) -> Any:
        return orjson.loads(text)


def event_text(event: str, arguments: list[Any]) -> str | None:
    """The text of a Socket.IO EVENT packet to namespace "/" without an ack id (``2[...]``),
    or None when the arguments need python-socketio's packet class: bytes (sent as binary
    attachments) or anything else orjson refuses.

    One orjson call instead of a packet object, a walk for binary data and an encode:
    broadcasts and relays are built here (fanout.py).
    """
    try:
        return "2" + orjson.dumps([event, *arguments], option=ORJSON_OPTIONS).decode()
    except TypeError:
        return None


def contains_binary(data: Any) -> bool:
    """Whether ``data`` holds bytes anywhere (stops at the first)."""
    if isinstance(data, bytes | bytearray):
        return True
    if isinstance(data, list | tuple):
        return any(contains_binary(item) for item in data)
    if isinstance(data, dict):
        return any(contains_binary(value) for value in data.values())
    return False


class FastPacket(packet.Packet):
    """python-socketio's packet, with orjson and an early-exit binary check."""

    json = OrjsonModule

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return contains_binary(data)

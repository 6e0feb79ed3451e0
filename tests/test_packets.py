"""Socket.IO packets encoded with orjson carry what the standard library's json carried."""

from __future__ import annotations

import json

import numpy as np
import pytest
from socketio import packet

from server.packets import FastPacket
from server.socket_server import plain_event

PAYLOADS = [
    {"peer_id": "abc", "audio": True, "count": 2, "nickname": "Zoë ☕"},
    {"start": np.float64(1.25), "end": np.float64(2.5)},  # a float subclass
    {"big": 2**70, "nested": [{"a": [1, 2, None]}], "keys": {1: "one"}},
    float("1e-7"),
    None,
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_packets_decode_to_what_the_stock_packet_class_sends(payload):
    ours = FastPacket(packet.EVENT, namespace="/", data=["event", payload]).encode()
    stock = packet.Packet(packet.EVENT, namespace="/", data=["event", payload]).encode()
    assert json.loads(ours[1:]) == json.loads(stock[1:])
    assert FastPacket(encoded_packet=ours).data == json.loads(stock[1:])


def test_numpy_scalars_the_standard_library_refuses_are_encoded_too():
    encoded = FastPacket(
        packet.EVENT, data=["level", {"dbfs": np.float32(-6.5), "n": np.int64(3)}]
    ).encode()
    assert json.loads(encoded[1:]) == ["level", {"dbfs": -6.5, "n": 3}]


def test_binary_payloads_are_still_binary_events():
    encoded = FastPacket(packet.EVENT, namespace="/", data=["blob", {"x": [1, b"\x00"]}]).encode()
    assert isinstance(encoded, list) and encoded[0].startswith("51-")
    assert not FastPacket.data_is_binary(["a", {"b": [1, "c"]}])


@pytest.mark.parametrize(
    "encoded",
    [
        '2["ice",{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host"},"room"]',
        '27["join_room",{"room":"a"}]',
        '2123456789012345["offer",{"type":"offer","sdp":"v=0"}]',
        '2["bye"]',
    ],
)
def test_plain_events_are_read_as_python_socketio_reads_them(encoded):
    stock = packet.Packet(encoded_packet=encoded)
    assert plain_event(encoded) == (stock.id, stock.data)


@pytest.mark.parametrize(
    "encoded",
    [
        '2/admin,["ice",{}]',  # another namespace
        '21234567890123456["ice"]',  # an ack id too long for the shortcut
        '2[{"not":"an event name"}]',
        "2[]",
        '3["ack"]',
        '51-["binary",{"_placeholder":true,"num":0}]',
        b'2["ice"]',
    ],
)
def test_other_packets_are_left_to_python_socketio(encoded):
    assert plain_event(encoded) is None


def test_a_plain_event_with_bad_json_is_an_error_like_python_socketio_gives():
    with pytest.raises(ValueError):
        plain_event('2["ice",{')
    with pytest.raises(ValueError):
        packet.Packet(encoded_packet='2["ice",{')

"""engine.io sessions as roomrelay runs them (server/engine_socket.py): same protocol, less work."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp._websocket import writer as aiohttp_ws_writer
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from engineio import async_socket, packet

from server.engine_socket import (
    EngineIoInternalsChanged,
    LeanSocket,
    OutgoingMessage,
    check_engineio_internals,
    websocket_frame,
)
from tests.support.clients import PythonClient
from tests.support.polling import eventually

HEARTBEAT = ("--media", "p2p", "--ping-interval", "1", "--ping-timeout", "1")


def connections(server) -> int:
    return server.get_json("/stats")["connections"]


async def next_text(ws: aiohttp.ClientWebSocketResponse) -> str | None:
    """The next engine.io packet, or None once the server closed the WebSocket."""
    message = await ws.receive(timeout=10)
    return message.data if message.type == aiohttp.WSMsgType.TEXT else None


@pytest.mark.slow
async def test_pings_keep_a_websocket_and_missed_pongs_end_it_with_a_close(server_pool):
    server = server_pool.get(*HEARTBEAT)
    before = connections(server)
    url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        handshake = await next_text(ws)
        assert handshake and handshake[0] == "0"
        assert json.loads(handshake[1:])["pingInterval"] == 1000
        await ws.send_str("40")  # Socket.IO connect to "/"
        assert (await next_text(ws) or "").startswith("40")
        await eventually(lambda: connections(server) == before + 1)

        for _ in range(3):  # three whole cycles, each ping answered
            assert await next_text(ws) == "2"
            await ws.send_str("3")
        assert connections(server) == before + 1

        # Now silent: pings keep coming on schedule, unanswered, until the server says
        # CLOSE and hangs up.
        unanswered = []
        while (packet := await next_text(ws)) == "2":
            unanswered.append(packet)
        assert unanswered and packet == "1"
        assert await next_text(ws) is None
    await eventually(lambda: connections(server) == before)


@pytest.mark.slow
@pytest.mark.parametrize("transports", [["polling"], ["polling", "websocket"]])
async def test_long_polling_and_its_upgrade_stay_and_carry_events_both_ways(
    server_pool, room, transports
):
    server = server_pool.get(*HEARTBEAT)
    name = room("transports")
    ada = await PythonClient(transports).connect(server.url)
    grace = await PythonClient(["websocket"]).connect(server.url)
    (joined,) = await ada.call("join_room", {"room": name, "nickname": "Ada"})
    await grace.call("join_room", {"room": name, "nickname": "Grace"})
    await ada.wait_for("user_joined")
    await asyncio.sleep(3)  # three ping intervals: answered pongs keep both sessions
    assert "user_left" not in ada.names() and "user_left" not in grace.names()
    await grace.call("chat_message", {"text": "to Ada"})
    await ada.call("chat_message", {"text": "to Grace"})
    assert (await ada.wait_for("chat_message"))[0]["text"] == "to Ada"
    assert (await grace.wait_for("chat_message"))[0]["text"] == "to Grace"
    assert ada.sio.transport() == transports[-1]
    assert joined["ok"]
    await ada.close()
    await grace.wait_for("user_left")
    await grace.close()


def test_the_engineio_internals_we_rely_on_are_there(monkeypatch):
    check_engineio_internals()

    async def handler_with_new_parameters(self, ws, environ):
        return None

    monkeypatch.setattr(async_socket.AsyncSocket, "_websocket_handler", handler_with_new_parameters)
    with pytest.raises(EngineIoInternalsChanged, match="_websocket_handler"):
        check_engineio_internals()


def test_a_changed_aiohttp_websocket_writer_fails_loudly(monkeypatch):
    def writer_without_a_transport(self, protocol, transport, **options):
        self.protocol = protocol

    monkeypatch.setattr(aiohttp_ws_writer.WebSocketWriter, "__init__", writer_without_a_transport)
    with pytest.raises(EngineIoInternalsChanged, match="transport"):
        check_engineio_internals()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_our_frames_are_read_back_by_aiohttps_websocket_reader(size, kind):
    payload: str | bytes = "é" * (size // 2) + "x" * (size % 2)
    if kind == "binary":
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    paused = SimpleNamespace(_reading_paused=False)
    queue = WebSocketDataQueue(paused, 2**20, loop=asyncio.get_running_loop())
    reader = WebSocketReader(queue, 2**20, compress=False, decode_text=True)
    frame = websocket_frame(payload)
    reader.feed_data(frame[:3])  # in two reads, as TCP may deliver it
    reader.feed_data(frame[3:])
    message = queue._buffer.popleft()[0]
    assert message.type is (WSMsgType.TEXT if kind == "text" else WSMsgType.BINARY)
    assert message.data == payload


def test_a_broadcast_message_is_framed_once():
    message = OutgoingMessage('2["ice",{"candidate":"x"}]')
    assert message.encode() == '42["ice",{"candidate":"x"}]'
    assert message.frame == websocket_frame(message.encode())


class FrameRecorder:
    """Stands in for aiohttp's WebSocketWriter: records what reaches the transport, can
    apply back-pressure."""

    compress = 0

    def __init__(self) -> None:
        self.protocol = SimpleNamespace(_paused=False)
        self.frames: list[str] = []
        self.transport = SimpleNamespace(
            is_closing=lambda: False,
            write=lambda frame: self.frames.append(frame[2:].decode()),  # short frames only
        )


async def test_packets_are_written_at_once_only_when_nothing_waits_before_them():
    writer = FrameRecorder()
    session = LeanSocket.__new__(LeanSocket)
    session.queue = asyncio.Queue()
    session._response = SimpleNamespace(_writer=writer)

    def message(text: str) -> packet.Packet:
        return packet.Packet(packet.MESSAGE, text)

    session.put(message("first"))
    assert writer.frames == ["4first"] and session.queue.empty()

    writer.protocol._paused = True  # the transport's buffer is over its high-water mark
    session.put(message("second"))
    writer.protocol._paused = False
    session.put(message("third"))  # must not overtake "second", still queued
    assert writer.frames == ["4first"]
    assert [session.queue.get_nowait().data for _ in range(2)] == ["second", "third"]

    session._writing = True  # the writer task waits for the transport with a packet in hand
    session.put(message("fourth"))
    assert writer.frames == ["4first"] and session.queue.qsize() == 1

"""engine.io sessions as roomrelay runs them (server/engine_socket.py): same protocol, less work."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp._websocket import writer as aiohttp_ws_writer
from engineio import async_socket, packet

from server.engine_socket import EngineIoInternalsChanged, LeanSocket, check_engineio_internals
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
    def new_frame_writer(self, message, opcode, rsv, flush):
        return None

    monkeypatch.setattr(
        aiohttp_ws_writer.WebSocketWriter,
        "_write_websocket_frame",
        new_frame_writer,
    )
    with pytest.raises(EngineIoInternalsChanged, match="_write_websocket_frame"):
        check_engineio_internals()


class FrameRecorder:
    """Stands in for aiohttp's WebSocketWriter: records frames, can apply back-pressure."""

    compress = 0

    def __init__(self) -> None:
        self.protocol = SimpleNamespace(_paused=False)
        self.frames: list[str] = []

    def _write_websocket_frame(self, message: bytes, opcode: int, rsv: int) -> None:
        self.frames.append(message.decode())


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

"""Data channels in relay mode: the server passes messages between a room's channels."""

from __future__ import annotations

import asyncio

import pytest
import socketio
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from tests.support.access import token
from tests.support.media import ToneTrack
from tests.support.polling import eventually

pytestmark = pytest.mark.media


class ChannelClient:
    """A zoom-clone-style client made of aiortc: one peer connection with a ``chat`` channel."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient()
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        # Like zoom-clone: tracks first, the channel when it makes its offer.
        self.pc.addTrack(ToneTrack(440))
        self.channel = self.pc.createDataChannel("chat")
        self.received: list[str | bytes] = []
        self.errors: list[dict] = []
        self.channel.on("message", self.received.append)
        self.sio.on("error", self.errors.append)

    async def join(self, url: str, room_name: str, token: str | None = None) -> ChannelClient:
        answers: asyncio.Queue[dict] = asyncio.Queue()
        self.sio.on("answer", answers.put_nowait)
        auth = {"token": token} if token else None
        await self.sio.connect(url, transports=["websocket"], auth=auth)
        await self.sio.emit("join_room", room_name)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        await self.sio.emit("offer", ({"type": offer.type, "sdp": offer.sdp}, room_name))
        answer = await asyncio.wait_for(answers.get(), 20)
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        for _ in range(200):
            if self.channel.readyState == "open":
                return self
            await asyncio.sleep(0.05)
        raise TimeoutError("the chat channel did not open")

    async def close(self) -> None:
        await self.pc.close()
        await self.sio.disconnect()


async def test_messages_reach_the_rooms_other_channels_only(relay_server, room):
    name, elsewhere = room("dc"), room("dc-other")
    clients = []
    try:
        for room_name in (name, name, name, elsewhere):
            clients.append(await ChannelClient().join(relay_server.url, room_name))
        ada, grace, linus, outsider = clients
        ada.channel.send("hello")
        ada.channel.send(b"\x00\x01 bytes too")
        await eventually(lambda: len(grace.received) == 2 and len(linus.received) == 2)
        assert grace.received == linus.received == ["hello", b"\x00\x01 bytes too"]

        ada.channel.send("x" * 20_000)  # over the limit: refused, nothing else happens
        grace.channel.send("still here")
        await eventually(lambda: ada.errors and "still here" in linus.received)
        assert ada.errors[0]["code"] == "too_large" and ada.errors[0]["event"] == "datachannel"
        assert ada.received == ["still here"]
        assert all(len(message) < 1000 for c in clients for message in c.received)
        assert outsider.received == []
        rooms = {r["name"]: r for r in relay_server.get_json("/rooms")["rooms"]}
        assert rooms[name]["media"]["datachannels"]["refused"] == 1
    finally:
        for client in clients:
            await client.close()


async def test_refusals_the_media_core_reports_are_counted_in_stats(relay_server, room):
    """Errors reported after an event's own handler returned count like any other."""
    name = room("dc-stats")
    clients = [await ChannelClient().join(relay_server.url, name) for _ in range(2)]
    try:
        before = relay_server.get_json("/stats")["errors_by_code"].get("too_large", 0)
        clients[0].channel.send("x" * 20_000)
        await eventually(lambda: clients[0].errors)
        after = relay_server.get_json("/stats")["errors_by_code"].get("too_large", 0)
        assert after == before + 1
    finally:
        for client in clients:
            await client.close()


async def test_a_token_without_chat_cannot_send_on_data_channels(token_server, room):
    name = room("dc-grant")
    muted = await ChannelClient().join(
        token_server.url, name, token("mute", name, can_publish_data=False)
    )
    talker = await ChannelClient().join(token_server.url, name, token("talk", name))
    try:
        muted.channel.send("let me speak")
        talker.channel.send("hello")
        await eventually(lambda: muted.errors and muted.received == ["hello"])
        assert muted.errors[0]["code"] == "forbidden" and muted.errors[0]["event"] == "datachannel"
        await asyncio.sleep(0.3)
        assert talker.received == []
    finally:
        await muted.close()
        await talker.close()

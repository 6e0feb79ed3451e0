"""Clients of the two earlier designs and of the zoom-clone video stage, written from their docs.

``WsRelayClient`` speaks the FastAPI room relay's WebSocket protocol (an aiohttp
WebSocket plus aiortc, the way its React page did); ``VideoStageClient`` is the
zoom-clone video stage (python-socketio plus aiortc, offering on ``welcome``).
Both offer once with a camera and a microphone on sendrecv m-lines and receive
whatever the server sends back on those same m-lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole, MediaRelay

TIMEOUT = 15.0


class CallPeer:
    """One RTCPeerConnection sending two tracks and receiving one of each kind back."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.remote: dict[str, MediaStreamTrack] = {}
        self._relay = MediaRelay()
        self._drains: list[MediaBlackhole] = []
        self.pc.on("track", self._on_track)

    async def _on_track(self, track: MediaStreamTrack) -> None:
        self.remote[track.kind] = track
        drain = MediaBlackhole()  # aiortc queues decoded frames without limit: read them all
        drain.addTrack(self._relay.subscribe(track, buffered=False))
        self._drains.append(drain)
        await drain.start()

    def received(self, kind: str) -> MediaStreamTrack:
        """The latest frames of what the server sends on the ``kind`` m-line."""
        return self._relay.subscribe(self.remote[kind], buffered=False)

    async def offer(self, *tracks: MediaStreamTrack) -> dict[str, str]:
        for track in tracks:
            self.pc.addTrack(track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"type": "offer", "sdp": self.pc.localDescription.sdp}

    async def accept(self, answer: dict[str, Any]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    async def wait_connected(self, timeout: float = TIMEOUT, tracks: int = 2) -> None:
        async def connected() -> None:
            while self.pc.connectionState != "connected" or len(self.remote) < tracks:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(connected(), timeout)

    async def close(self) -> None:
        for drain in self._drains:
            await drain.stop()
        await self.pc.close()


class WsRelayClient:
    """The FastAPI room relay's client: JSON messages over ``WS /ws``, one offer per call."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http", "ws", 1) + "/ws"
        self.messages: list[dict[str, Any]] = []
        self.peer_id: str | None = None
        self.call = CallPeer()
        self._session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def connect(self, query: str = "") -> WsRelayClient:
        self._session = aiohttp.ClientSession()
        self.socket = await self._session.ws_connect(self.url + query)
        self._reader = asyncio.create_task(self._read())
        self.peer_id = (await self.wait_for("peer_id"))["peer_id"]
        return self

    async def _read(self) -> None:
        assert self.socket is not None
        async for message in self.socket:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
                self._changed.set()
                if self.messages[-1]["type"] == "answer":
                    await self.call.accept(self.messages[-1])
        self.messages.append({"type": "(closed)", "code": self.socket.close_code})
        self._changed.set()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = TIMEOUT) -> dict:
        async def arrived() -> None:
            while len(self.of_type(kind)) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(arrived(), timeout)
        return self.of_type(kind)[count - 1]

    async def send(self, message: Any) -> None:
        assert self.socket is not None
        await self.socket.send_str(message if isinstance(message, str) else json.dumps(message))

    async def request(self, message: Any, reply: str) -> dict[str, Any]:
        """Send, then wait for the next ``reply`` message (or an ``error``)."""
        before = len(self.of_type(reply)), len(self.of_type("error"))
        await self.send(message)

        async def answered() -> None:
            while (len(self.of_type(reply)), len(self.of_type("error"))) == before:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(answered(), TIMEOUT)
        if len(self.of_type("error")) > before[1]:
            return self.of_type("error")[-1]
        return self.of_type(reply)[-1]

    async def join(self, room: str, nickname: str) -> dict[str, Any]:
        return await self.request(
            {"type": "join_room", "room_name": room, "nickname": nickname}, "room_joined"
        )

    async def start_call(self, *tracks: MediaStreamTrack) -> None:
        """Offer once, the way the React page sent ``pc.localDescription`` under ``data``."""
        offer = await self.call.offer(*tracks)
        await self.send({"type": "offer", "data": offer})
        await self.send({"type": "ice_candidate", "candidate": None})
        await self.call.wait_connected(tracks=len(tracks))

    async def close(self) -> None:
        await self.call.close()
        if self.socket is not None:
            await self.socket.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()


class VideoStageClient:
    """The zoom-clone video stage: ``join_room(name)``, offer on ``welcome``, answer in.

    With ``new_tracks``, a later ``welcome`` (the room's media moved to another server
    process) makes a new connection sending new tracks: a browser re-offers on its one
    connection and restarts ICE, which aiortc cannot do.
    """

    def __init__(
        self, url: str, new_tracks: Callable[[], tuple[MediaStreamTrack, ...]] | None = None
    ) -> None:
        self.url = url
        self._new_tracks = new_tracks
        self._offered = False
        self.sio = socketio.AsyncClient(reconnection=False)
        self.call = CallPeer()
        self.room: str | None = None
        self._tracks: tuple[MediaStreamTrack, ...] = ()
        self.answers: list[dict[str, Any]] = []
        self.sio.on("welcome", self._on_welcome)
        self.sio.on("answer", self._on_answer)

    async def _on_answer(self, answer: dict[str, Any]) -> None:
        self.answers.append(answer)
        await self.call.accept(answer)

    async def _on_welcome(self, *args: Any) -> None:
        if args:
            return  # the chat stage's welcome(nickname, count) is not ours
        if self._offered and self._new_tracks is not None:
            await self.call.close()
            self.call, self._tracks = CallPeer(), self._new_tracks()
        self._offered = True
        offer = await self.call.offer(*self._tracks)
        self._tracks = ()  # a later welcome re-offers the same transceivers
        await self.sio.emit("offer", (offer, self.room))

    async def join(self, room: str, *tracks: MediaStreamTrack) -> None:
        self.room, self._tracks = room, tracks
        await self.sio.connect(self.url, wait_timeout=10)
        await self.sio.emit("join_room", room)
        await self.call.wait_connected()

    async def close(self) -> None:
        await self.call.close()
        await self.sio.disconnect()

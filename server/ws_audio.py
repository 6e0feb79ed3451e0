"""``WS /ws/audio/{client_id}``: live PCM audio for clients with no WebRTC stack (voice bots).

Out: after ``start_streaming``, binary messages of 16 kHz mono s16le PCM (20 ms,
640 bytes each) from the server's audio tap: one participant's audio, or the
room's mix. In: after ``send_input``, binary messages of the same format are
published into the room as the client's own participant. The server runs the
WebRTC side for it: an in-process aiortc peer whose track plays the received PCM
opens a session like a WHIP publisher (whip.py), so the bot is counted, listed,
recorded and heard by everyone. Control messages are JSON text; see
docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from typing import Any

from aiohttp import WSMsgType, web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from . import validation
from .access import AccessError
from .audio.consumer import BYTES_PER_SECOND, SAMPLE_RATE
from .audio.hub import LiveStream
from .cluster.forward import FORWARDED, NodeAudioStream, other_node_url
from .context import RoomServer
from .grants import Grant
from .settings import Settings
from .validation import ProtocolError
from .whip import HttpMediaSessions, HttpSession
from .ws_dialect import MAX_TYPE_LENGTH, origin_allowed

logger = logging.getLogger(__name__)

FRAME_SECONDS = 0.02
FRAME_BYTES = int(BYTES_PER_SECOND * FRAME_SECONDS)  # 640
MAX_INPUT_MESSAGE = 64 * 1024  # bytes of PCM in one binary message (2 s)
MAX_INPUT_BUFFER = BYTES_PER_SECOND * 2  # PCM waiting to be played; older audio is dropped
KIND = "wsaudio"


class PcmTrack(MediaStreamTrack):
    """Plays the PCM a client sends, paced in real time; silence while none is waiting."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._samples = 0
        self._start: float | None = None
        self.dropped_bytes = 0

    def feed(self, pcm: bytes) -> None:
        self._buffer += pcm
        excess = len(self._buffer) - MAX_INPUT_BUFFER
        if excess > 0:
            excess += excess % 2
            del self._buffer[:excess]
            self.dropped_bytes += excess

    async def recv(self) -> AudioFrame:
        per_frame = FRAME_BYTES // 2
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._samples / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        data = bytes(self._buffer[:FRAME_BYTES])
        del self._buffer[:FRAME_BYTES]
        data += bytes(FRAME_BYTES - len(data))
        frame = AudioFrame(format="s16", layout="mono", samples=per_frame)
        frame.planes[0].update(data)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._samples += per_frame
        return frame


class AudioClient:
    """One /ws/audio connection: what it listens to and what it publishes."""

    def __init__(
        self,
        client_id: str,
        socket: web.WebSocketResponse,
        grant: Grant,
        request: web.Request,
    ) -> None:
        self.client_id = client_id
        self.socket = socket
        self.grant = grant
        self.query_string = request.query_string  # its credentials, for another node
        self.forwarded = FORWARDED in request.headers  # another node streams for its client
        self.listener: LiveStream | None = None  # or another node's (NodeAudioStream)
        self.input: PcmTrack | None = None
        self.peer: RTCPeerConnection | None = None
        self.session: HttpSession | None = None
        self._lock = asyncio.Lock()

    async def send_json(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if not self.socket.closed:
                with contextlib.suppress(ConnectionResetError):
                    await self.socket.send_str(json.dumps(message))

    async def send_pcm(self, pcm: bytes) -> None:
        async with self._lock:
            if not self.socket.closed:
                with contextlib.suppress(ConnectionResetError):
                    await self.socket.send_bytes(pcm)


class AudioSockets:
    """Serves ``/ws/audio/{client_id}``."""

    def __init__(
        self,
        settings: Settings,
        server: RoomServer,
        sessions: HttpMediaSessions,
    ) -> None:
        self._settings = settings
        self._server = server
        self._sessions = sessions
        self._clients: dict[str, AudioClient] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws/audio/{client_id}", self.serve)]

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request, self._settings.cors_origins):
            return web.json_response({"error": "forbidden_origin"}, status=403)
        client_id = request.match_info["client_id"]
        if len(client_id) > validation.MAX_MID * 2 or client_id in self._clients:
            return web.json_response(
                {"error": "bad_request", "message": "client_id is too long or already in use"},
                status=409 if client_id in self._clients else 400,
            )
        socket = web.WebSocketResponse(
            max_msg_size=MAX_INPUT_MESSAGE * 2, heartbeat=self._settings.ping_interval
        )
        await socket.prepare(request)
        try:
            grant = self._server.access.connection_grant(None, request.query_string)
        except AccessError as refused:
            await socket.send_str(json.dumps({"type": "error", **refused.payload()}))
            await socket.close(code=1008)
            return socket
        client = self._clients[client_id] = AudioClient(client_id, socket, grant, request)
        try:
            await self._read(client)
        finally:
            self._clients.pop(client_id, None)
            await self._stop_streaming(client)
            await self._stop_input(client)
        return socket

    async def _read(self, client: AudioClient) -> None:
        async for message in client.socket:
            try:
                if message.type is WSMsgType.BINARY:
                    self._take_pcm(client, message.data)
                elif message.type is WSMsgType.TEXT:
                    await self._control(client, message.data)
            except ProtocolError as error:
                self._server.stats.count_error(error.code)
                await client.send_json(
                    {"type": "error", "code": error.code, "message": error.message}
                )

    def _take_pcm(self, client: AudioClient, pcm: bytes) -> None:
        if client.input is None:
            raise ProtocolError("not_publishing", "send_input first, then binary PCM")
        if len(pcm) % 2 or len(pcm) > MAX_INPUT_MESSAGE:
            raise validation.bad_request(
                f"PCM messages are whole s16le samples, at most {MAX_INPUT_MESSAGE} bytes"
            )
        client.input.feed(pcm)

    async def _control(self, client: AudioClient, text: str) -> None:
        if len(text) > 16 * 1024:
            raise ProtocolError("too_large", "control messages are limited to 16 KiB")
        try:
            message = json.loads(text)
        except ValueError:
            raise validation.bad_request("control messages are JSON objects") from None
        message = validation.mapping(message, "a control message")
        kind = message.get("type")
        if not isinstance(kind, str) or len(kind) > MAX_TYPE_LENGTH:
            raise validation.bad_request("a control message needs a 'type' string")
        data = message.get("data", {})
        fields = {**validation.mapping(data, "data"), **message}
        self._server.stats.count_event(f"ws/audio:{kind}")
        if kind == "start_streaming":
            await self._start_streaming(client, fields)
        elif kind == "stop_streaming":
            await self._stop_streaming(client)
            await client.send_json({"type": "log", "message": "streaming stopped"})
        elif kind == "send_input":
            await self._start_input(client, fields)
        elif kind == "stop_input":
            await self._stop_input(client)
            await client.send_json({"type": "log", "message": "input stopped"})
        elif kind == "fetch_output":
            await client.send_json(self._describe(client))
        else:
            raise ProtocolError("unknown_type", f"unknown message type {kind[:64]!r}")

    def _target(self, fields: dict[str, Any]) -> tuple[str, str | None]:
        """(room, peer id or None for the mix) from ``room``/``peer_id`` or a ``webrtc_id``."""
        webrtc_id = fields.get("webrtc_id")
        if webrtc_id is not None:
            session = self._sessions.get(webrtc_id) if isinstance(webrtc_id, str) else None
            if session is None:
                raise ProtocolError("not_found", "no stream with that webrtc_id")
            return session.room, session.participant.peer_id
        room = validation.room_name(fields.get("room"))
        peer_id = fields.get("peer_id")
        if peer_id is not None and (not isinstance(peer_id, str) or len(peer_id) > 64):
            raise validation.bad_request("peer_id must be a short string")
        return room, peer_id

    async def _start_streaming(self, client: AudioClient, fields: dict[str, Any]) -> None:
        if self._server.media.mode != "relay":
            raise ProtocolError("unsupported", "live audio needs a relay server (--media relay)")
        room, peer_id = self._target(fields)
        self._server.access.check_join(client.grant, room)
        if not client.grant.can_subscribe:
            raise ProtocolError("forbidden", "your access token does not allow subscribing")
        elsewhere = self._audio_node_url(room)
        await self._stop_streaming(client)
        if elsewhere is not None:
            if client.forwarded:  # placement changed while the request was on its way
                raise ProtocolError("wrong_node", f"room {room!r}'s audio is at {elsewhere}")
            stream = NodeAudioStream(room, peer_id)
            await stream.open(elsewhere, client.query_string, client.send_pcm, client.send_json)
            client.listener = stream  # the owner's answer ("streaming", or an error) follows
            return
        client.listener = await self._server.audio.listen(room, peer_id, client.send_pcm)
        await client.send_json(
            {
                "type": "log",
                "message": "streaming",
                "room": room,
                "peer_id": peer_id,
                "format": "s16le",
                "sample_rate": SAMPLE_RATE,
                "channels": 1,
            }
        )

    def _audio_node_url(self, room: str) -> str | None:
        """In a cluster a room's audio is tapped on the node that runs its media: its URL
        when that is another node (None: here)."""
        if self._server.cluster is None:
            return None
        owner = self._server.media.room_stats(room).get("node")
        return other_node_url(self._server.cluster, owner)

    async def _stop_streaming(self, client: AudioClient) -> None:
        listener, client.listener = client.listener, None
        if listener is not None:
            await listener.close()

    async def _start_input(self, client: AudioClient, fields: dict[str, Any]) -> None:
        if client.input is not None:
            raise ProtocolError("already_publishing", "this connection already publishes")
        room = validation.room_name(fields.get("room"))
        nickname = fields.get("nickname")
        track = PcmTrack()
        peer = RTCPeerConnection()
        peer.addTransceiver(track, direction="sendonly")
        try:
            await peer.setLocalDescription(await peer.createOffer())
            session, answer = await self._sessions.open(
                KIND,
                room,
                peer.localDescription.sdp,
                client.grant,
                nickname=nickname if nickname is not None else f"bot-{client.client_id}"[:64],
                token=None,
                direction="whip",
            )
            await peer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        except BaseException:
            await peer.close()
            raise
        client.input, client.peer, client.session = track, peer, session
        await client.send_json(
            {
                "type": "log",
                "message": "publishing",
                "room": room,
                "peer_id": session.participant.peer_id,
                "nickname": session.participant.nickname,
            }
        )

    async def _stop_input(self, client: AudioClient) -> None:
        session, peer = client.session, client.peer
        client.input = client.peer = client.session = None
        if session is not None:
            await self._sessions.end(session)
        if peer is not None:
            await peer.close()

    def _describe(self, client: AudioClient) -> dict[str, Any]:
        listener, session = client.listener, client.session
        return {
            "type": "fetch_output",
            "client_id": client.client_id,
            "streaming": listener is not None,
            "room": listener.room if listener else None,
            "peer_id": listener.peer_id if listener else None,
            "dropped_chunks": listener.dropped if listener else 0,
            "publishing": session is not None,
            "input_peer_id": session.participant.peer_id if session else None,
            "input_dropped_bytes": client.input.dropped_bytes if client.input else 0,
        }

    async def close(self) -> None:
        for client in list(self._clients.values()):
            with contextlib.suppress(ConnectionResetError):
                await client.socket.close(code=1001, message=b"server shutting down")

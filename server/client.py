"""A Python client for roomrelay's native protocol: join a room, publish tracks, receive everyone.

Bots (recorders, AI agents) and the test suite use it::

    client = RoomClient("http://localhost:8000", nickname="bot")
    await client.connect()
    await client.join("standup", audio=my_audio_track, video=my_video_track)
    await client.wait_for_media({peer_id}, kinds=("audio", "video"))
    video = client.subscribe(peer_id, "video")      # a MediaStreamTrack to read frames from
    ...
    await client.close()

Every received track is drained in the background (aiortc queues decoded
frames without limit), and ``subscribe`` hands out relay proxies that keep only
the latest frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole, MediaRelay

from .tasks import cancel_and_wait

logger = logging.getLogger(__name__)

KINDS = ("audio", "video")
PRIMARY_SOURCES = ("microphone", "camera")  # what a track of a kind is by default
SERVER_EVENTS = (  # what the server may send a native client
    "answer",
    "tracks",
    "renegotiate",
    "media_closed",
    "user_joined",
    "user_left",
    "user_updated",
    "media_state",
    "active_speaker",
    "quality",
    "chat_message",
    "error",
    "muted",
    "removed",
    "room_locked",
    "room_ended",
)
EventHandler = Callable[[Any], Any]


class RoomError(RuntimeError):
    """The server refused a request; ``code`` is the protocol's error code."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.error = error


@dataclass
class RemotePeer:
    """Another participant as the client knows it."""

    peer_id: str
    nickname: str
    audio: bool = True
    video: bool = True
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)


class RoomClient:
    """One participant: a Socket.IO connection and one RTCPeerConnection to the server."""

    def __init__(
        self,
        url: str,
        *,
        nickname: str = "bot",
        video_codecs: Iterable[str] | None = None,
        answer_timeout: float = 20.0,
        token: str | None = None,
    ) -> None:
        """``video_codecs`` limits the video codecs offered, e.g. ``["video/H264"]``;
        ``token`` is an access token (``roomrelay token``) for servers that need one."""
        self.url = url
        self.token = token
        self.permissions: dict[str, bool] = {}
        self.nickname = nickname
        self._video_codecs = [c.lower() for c in video_codecs] if video_codecs else None
        self.peer_id: str | None = None
        self.room: str | None = None
        self.resume_token: str | None = None  # from the join ack: takes our place back
        self.peers: dict[str, RemotePeer] = {}
        self.events: list[tuple[str, Any]] = []
        self.active_speaker: str | None = None
        self.sio = self._new_socket()
        self._answer_timeout = answer_timeout
        self._handlers: dict[str, list[EventHandler]] = {}
        self._published: list[MediaStreamTrack] = []
        self._sending: set[MediaStreamTrack] = set()  # published tracks on the current connection
        self._pc: RTCPeerConnection | None = None
        self._ice_servers: list[RTCIceServer] = []  # from the join ack
        self._mid_owner: dict[str, str | None] = {}
        self._mid_source: dict[str, str | None] = {}  # what each receive slot carries
        self._sources: dict[MediaStreamTrack, str] = {}  # published tracks that are not the default
        self._sent_sources: dict[MediaStreamTrack, str] = {}  # the proxies actually sent
        self._wanted: Counter[str] = Counter()
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self._negotiation: asyncio.Task[None] | None = None
        self._again = False
        self._relay = MediaRelay()
        self._drains: list[MediaBlackhole] = []
        self._changed = asyncio.Event()

    def _new_socket(self) -> socketio.AsyncClient:
        """A Socket.IO client with our handlers, one per connection.

        python-engineio's client reuses its state for the next connection, and
        tasks of a lost connection that have not ended yet tear the next one down
        (a write loop that missed its stop signal times out, then its read loop
        reports the new connection as lost): a reconnect starts from a fresh one.
        """
        sio = socketio.AsyncClient(reconnection=False)
        for event in SERVER_EVENTS:
            sio.on(event, self._dispatcher(event))
        return sio

    # -- public API -------------------------------------------------------------------

    def on(self, event: str, handler: EventHandler) -> None:
        """Call ``handler(payload)`` for every ``event`` from the server."""
        self._handlers.setdefault(event, []).append(handler)

    async def connect(self) -> None:
        auth = {"token": self.token} if self.token else None
        await self.sio.connect(self.url, auth=auth, wait_timeout=10)

    async def join(
        self,
        room: str,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
    ) -> dict[str, Any]:
        """Join ``room``, publish the given tracks and start receiving everyone else's."""
        reply = await self._call("join_room", {"room": room, "nickname": self.nickname})
        self._apply_join(reply)
        self._published = [track for track in (audio, video) if track is not None]
        # One receive slot per track already published; the server asks for more later.
        receives = self.permissions.get("subscribe", True)
        self._wanted = Counter(reply["published"]) if receives else Counter()
        self._start_negotiation()
        return reply

    async def reconnect(self) -> bool:
        """A new Socket.IO connection after ours dropped, taking our place back.

        Returns True when the server still held our place (same peer id; the
        media connection carried on); False when it had let us go, in which case
        this joins again as a new participant and renegotiates from scratch.
        """
        if self.sio.connected:
            await self.sio.disconnect()
        self.sio = self._new_socket()
        await self.connect()
        if self.room is None:
            return False
        request = {"room": self.room, "nickname": self.nickname, "resume": self.resume_token}
        reply = await self._call("join_room", request)
        if reply["resumed"]:
            self._apply_join(reply)
            return True
        await self._reset_connection()
        self.peers.clear()
        self._apply_join(reply)
        receives = self.permissions.get("subscribe", True)
        self._wanted = Counter(reply["published"]) if receives else Counter()
        self._start_negotiation()
        return False

    def _apply_join(self, reply: dict[str, Any]) -> None:
        self.peer_id, self.room = reply["peer_id"], reply["room"]
        self.resume_token = reply.get("resume_token")
        self._ice_servers = [RTCIceServer(**server) for server in reply["ice_servers"]]
        for info in reply["participants"]:
            self.peers.setdefault(
                info["peer_id"],
                RemotePeer(info["peer_id"], info["nickname"], info["audio"], info["video"]),
            )
        present = {info["peer_id"] for info in reply["participants"]}
        for gone in set(self.peers) - present:
            del self.peers[gone]
        self.permissions = reply.get("permissions", {})

    async def publish(self, track: MediaStreamTrack, source: str | None = None) -> None:
        """Start sending another track (renegotiates).

        ``source`` says what it is: ``"screen"`` or ``"screen_audio"`` for a shared
        screen; by default a microphone or camera.
        """
        self._published.append(track)
        if source is not None:
            self._sources[track] = source
        self._start_negotiation()

    def subscribe(self, peer_id: str, kind: str) -> MediaStreamTrack:
        """A track carrying ``peer_id``'s media, keeping only the latest frame.

        ``kind`` is ``"audio"``/``"video"`` (their microphone, camera) or a source
        (``"screen"``, ``"screen_audio"``, ``"microphone"``, ``"camera"``).
        """
        track = self.peers[peer_id].tracks[kind]
        return self._relay.subscribe(track, buffered=False)

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Wait until ``condition()`` holds; it is re-checked after every server event."""

        async def until() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_for_media(
        self, peer_ids: Iterable[str], kinds: Iterable[str] = KINDS, timeout: float = 20.0
    ) -> None:
        """Wait until a track of every ``kind`` is mapped to each of ``peer_ids``."""
        peer_ids, kinds = list(peer_ids), list(kinds)
        await self.wait_until(
            lambda: all(
                peer in self.peers and all(kind in self.peers[peer].tracks for kind in kinds)
                for peer in peer_ids
            ),
            timeout,
        )

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait until the media connection to the server is up and the last offer answered."""
        await self.wait_until(
            lambda: (
                self.connection_state == "connected"
                and self._negotiation is not None
                and self._negotiation.done()
            ),
            timeout,
        )

    async def chat(self, text: str) -> dict[str, Any]:
        return (await self._call("chat_message", {"text": text}))["message"]

    async def set_media_state(
        self, *, audio: bool | None = None, video: bool | None = None
    ) -> None:
        state = {k: v for k, v in (("audio", audio), ("video", video)) if v is not None}
        await self._call("media_state", state)

    async def leave(self) -> None:
        await self._call("leave_room")
        await self._reset_connection()
        self.peers.clear()
        self.room = None

    async def close(self) -> None:
        """Leave, disconnect and stop the tracks this client published (as aiortc senders do)."""
        self.room = None  # no renegotiation may start from here on
        await self._reset_connection()
        for track in self._published:
            track.stop()
        if self.sio.connected:
            await self.sio.disconnect()

    @property
    def connection_state(self) -> str | None:
        return self._pc.connectionState if self._pc else None

    def stream_ids(self) -> dict[str, str]:
        """MediaStream id (``a=msid``) the server announced for each receive slot, by mid."""
        if self._pc is None or self._pc.remoteDescription is None:
            return {}
        ids: dict[str, str] = {}
        for section in self._pc.remoteDescription.sdp.split("\r\nm=")[1:]:
            attributes = dict(
                line[2:].split(":", 1)
                for line in section.split("\r\n")
                if line[:2] == "a=" and ":" in line
            )
            if "mid" in attributes and "msid" in attributes:
                ids[attributes["mid"]] = attributes["msid"].split()[0]
        return ids

    def mid_of(self, peer_id: str, kind: str) -> str | None:
        """The receive slot currently carrying ``peer_id``'s ``kind``."""
        return next(
            (
                mid
                for mid, owner in self._mid_owner.items()
                if owner == peer_id and self._kind_of_mid(mid) == kind
            ),
            None,
        )

    def _kind_of_mid(self, mid: str) -> str | None:
        if self._pc is None:
            return None
        return next((t.kind for t in self._pc.getTransceivers() if t.mid == mid), None)

    # -- Socket.IO ----------------------------------------------------------------------

    async def _call(self, event: str, *args: Any) -> dict[str, Any]:
        reply = await self.sio.call(event, tuple(args), timeout=self._answer_timeout)
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise RoomError(reply.get("error", {}) if isinstance(reply, dict) else {})
        return reply

    def _dispatcher(self, event: str) -> Callable[[Any], Any]:
        async def dispatch(payload: Any = None) -> None:
            self.events.append((event, payload))
            handler = getattr(self, f"_on_{event}", None)
            if handler is not None:
                await handler(payload)
            for user_handler in self._handlers.get(event, []):
                result = user_handler(payload)
                if asyncio.iscoroutine(result):
                    await result
            self._changed.set()

        return dispatch

    async def _on_answer(self, answer: dict[str, Any]) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(answer)

    async def _on_error(self, error: dict[str, Any]) -> None:
        answer = self._answer
        negotiating = self._negotiation is not None and not self._negotiation.done()
        if error.get("event") == "offer" and answer and not answer.done() and negotiating:
            answer.set_exception(RoomError(error))

    async def _on_tracks(self, payload: dict[str, Any]) -> None:
        self._mid_owner = {entry["mid"]: entry["peer_id"] for entry in payload["tracks"]}
        self._mid_source = {entry["mid"]: entry.get("source") for entry in payload["tracks"]}
        self._map_tracks()

    async def _on_renegotiate(self, wanted: dict[str, int]) -> None:
        self._wanted = Counter(wanted)
        self._start_negotiation()

    async def _on_media_closed(self, payload: dict[str, Any]) -> None:
        logger.info("server closed our media (%s); reconnecting", payload.get("reason"))
        await self._reset_connection()
        self._start_negotiation()

    async def _on_user_joined(self, info: dict[str, Any]) -> None:
        self.peers.setdefault(
            info["peer_id"],
            RemotePeer(info["peer_id"], info["nickname"], info["audio"], info["video"]),
        )

    async def _on_user_left(self, info: dict[str, Any]) -> None:
        self.peers.pop(info["peer_id"], None)

    async def _on_user_updated(self, info: dict[str, Any]) -> None:
        if info["peer_id"] in self.peers:
            self.peers[info["peer_id"]].nickname = info["nickname"]

    async def _on_media_state(self, state: dict[str, Any]) -> None:
        if state["peer_id"] in self.peers:
            self.peers[state["peer_id"]].audio = state["audio"]
            self.peers[state["peer_id"]].video = state["video"]

    async def _on_active_speaker(self, payload: dict[str, Any]) -> None:
        self.active_speaker = payload["peer_id"]

    # -- WebRTC ------------------------------------------------------------------------------

    def _map_tracks(self) -> None:
        """Point each peer's tracks at the receivers the server's ``tracks`` map names."""
        for peer in self.peers.values():
            peer.tracks.clear()
        if self._pc is None:
            return
        for transceiver in self._pc.getTransceivers():
            owner = self._mid_owner.get(transceiver.mid) if transceiver.mid else None
            track = transceiver.receiver.track
            if owner in self.peers and track is not None and transceiver.direction == "recvonly":
                tracks = self.peers[owner].tracks
                source = self._mid_source.get(transceiver.mid or "")
                if source is not None:
                    tracks[source] = track
                if source in (None, *PRIMARY_SOURCES):
                    tracks[transceiver.kind] = track

    def _start_negotiation(self) -> None:
        if self.room is None:
            return
        if self._pc is None and not self._published and not any(self._wanted.values()):
            return  # nothing to send or receive yet: the server says when there is
        if self._negotiation is not None and not self._negotiation.done():
            self._again = True
            return
        self._negotiation = asyncio.create_task(self._negotiate())
        self._negotiation.add_done_callback(self._negotiation_done)

    def _negotiation_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.warning("negotiation with %s failed: %r", self.url, task.exception())

    def _receive_slots(self) -> Counter[str]:
        assert self._pc is not None
        return Counter(t.kind for t in self._pc.getTransceivers() if t.direction == "recvonly")

    def _ensure_connection(self) -> RTCPeerConnection:
        if self._pc is None:
            self._pc = RTCPeerConnection(
                RTCConfiguration(
                    iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
                )
            )
            self._pc.on("track", self._drain)
            self._pc.on("connectionstatechange", self._changed.set)
        for track in self._published:
            if track not in self._sending:
                self._add_published(self._pc, track)
                self._sending.add(track)
        have = self._receive_slots()
        for kind in KINDS:
            for _ in range(self._wanted[kind] - have[kind]):
                self._restrict_codecs(self._pc.addTransceiver(kind, direction="recvonly"))
        return self._pc

    def _add_published(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        """Send ``track`` on a new sendonly m-line.

        A sender stops its track when its connection closes: it gets a relay proxy,
        so that the caller's track survives a reconnection.
        """
        proxy = self._relay.subscribe(track, buffered=False)
        if track in self._sources:
            self._sent_sources[proxy] = self._sources[track]
        self._restrict_codecs(pc.addTransceiver(proxy, direction="sendonly"))

    def _restrict_codecs(self, transceiver: RTCRtpTransceiver) -> None:
        if transceiver.kind != "video" or self._video_codecs is None:
            return
        capabilities = RTCRtpSender.getCapabilities("video").codecs
        wanted = [c for c in capabilities if c.mimeType.lower() in self._video_codecs]
        transceiver.setCodecPreferences(wanted)

    async def _drain(self, track: MediaStreamTrack) -> None:
        drain = MediaBlackhole()
        drain.addTrack(self._relay.subscribe(track, buffered=False))
        self._drains.append(drain)
        await drain.start()

    async def _negotiate(self) -> None:
        while True:
            self._again = False
            pc = self._ensure_connection()
            await pc.setLocalDescription(await pc.createOffer())
            self._answer = answer_future = asyncio.get_running_loop().create_future()
            # A refused offer comes back twice (the ack and an error event): read both.
            answer_future.add_done_callback(lambda f: f.cancelled() or f.exception())
            offer: dict[str, Any] = {"type": "offer", "sdp": pc.localDescription.sdp}
            sources = {
                t.mid: self._sent_sources[t.sender.track]
                for t in pc.getTransceivers()
                if t.mid is not None and t.sender.track in self._sent_sources
            }
            if sources:
                offer["sources"] = sources
            await self._call("offer", offer)
            answer = await asyncio.wait_for(answer_future, self._answer_timeout)
            if pc is not self._pc:
                continue  # the connection was reset while we waited
            await pc.setRemoteDescription(RTCSessionDescription(**answer))
            self._map_tracks()
            self._changed.set()
            if not self._again:
                return

    async def _reset_connection(self) -> None:
        if self._negotiation is not None and self._negotiation is not asyncio.current_task():
            with contextlib.suppress(Exception):
                await cancel_and_wait(self._negotiation)
        self._negotiation = None
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        pc, self._pc = self._pc, None
        drains, self._drains = self._drains, []
        for drain in drains:
            await drain.stop()
        if pc is not None:
            await pc.close()
        self._mid_owner = {}
        self._sending.clear()
        for peer in self.peers.values():
            peer.tracks.clear()

"""Relay mode: the server answers every offer with aiortc and fans tracks out to the room."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

import socketio
from aiortc import RTCIceServer
from aiortc.contrib.media import MediaRelay

from ..audio.hub import AudioHub
from ..events import error_payload
from ..rooms import Dialect, Participant, Roster
from ..settings import Settings
from ..validation import IceCandidate, ProtocolError
from .aiortc_hooks import check_aiortc_internals, use_fast_clock
from .datachannels import DataChannelBridge
from .offer import parse_candidate, parse_offer
from .peer import MediaPeer
from .publication import Publication
from .speaker import SpeakerDetector

logger = logging.getLogger(__name__)

SPEAKER_INTERVAL = 0.25  # seconds between active-speaker decisions


class Signal:
    """How the media layer talks to clients over Socket.IO."""

    def __init__(self, sio: socketio.AsyncServer, roster: Roster) -> None:
        self._sio = sio
        self.roster = roster

    async def send(self, participant: Participant, event: str, data: Any = None) -> None:
        await self._sio.emit(event, data, to=participant.sid)

    async def error(self, participant: Participant, event: str, error: ProtocolError) -> None:
        logger.info("media error for %s: %s (%s)", participant.peer_id, error.code, error)
        await self._sio.emit("error", error_payload(event, error), to=participant.sid)


class RelayRoom:
    """The media side of one Socket.IO room: its peers, their tracks, its active speaker."""

    def __init__(self, name: str, signal: Signal, relay: MediaRelay, audio: AudioHub) -> None:
        self.name = name
        self.signal = signal
        self.relay = relay
        self.audio = audio
        self.peers: dict[str, MediaPeer] = {}
        self.datachannels = DataChannelBridge(signal)
        self._invited: dict[str, dict[str, int]] = {}  # sid -> slots we asked a viewer for
        self.speaker = SpeakerDetector()
        self._speaker_task = asyncio.create_task(self._follow_speaker())

    def publications(self) -> list[Publication]:
        return [
            publication
            for peer in self.peers.values()
            for publication in peer.publications.values()
        ]

    def published(self) -> dict[str, int]:
        """How many audio and video tracks the room's participants publish."""
        kinds = Counter(publication.kind for publication in self.publications())
        return {"audio": kinds["audio"], "video": kinds["video"]}

    def reallocate(self) -> None:
        """Re-plan every peer's slots from the room's current publications."""
        publications = self.publications()
        order = self.speaker.order
        for peer in self.peers.values():
            others = [p for p in publications if p.peer_id != peer.peer_id]
            peer.reallocate(others, order)

    async def flush(self) -> None:
        for peer in list(self.peers.values()):
            await peer.flush_notices()
        await self._invite_viewers()

    async def _invite_viewers(self) -> None:
        """Native members with no media session yet learn when there is something to receive.

        They have nothing to offer until someone publishes, and the server never
        offers, so it asks them (``renegotiate``) to open a connection with slots.
        """
        wanted = self.published()
        members = self.signal.roster.members(self.name)
        present = {member.sid for member in members}
        self._invited = {sid: asked for sid, asked in self._invited.items() if sid in present}
        for member in members:
            if member.dialect is not Dialect.NATIVE or member.sid in self.peers:
                continue
            if any(wanted.values()) and self._invited.get(member.sid) != wanted:
                self._invited[member.sid] = wanted
                await self.signal.send(member, "renegotiate", wanted)

    async def refresh(self) -> None:
        self.reallocate()
        await self.flush()

    async def _follow_speaker(self) -> None:
        while True:
            await asyncio.sleep(SPEAKER_INTERVAL)
            if self.speaker.evaluate():
                logger.debug("active speaker in %r: %s", self.name, self.speaker.dominant)
                await self.signal.roster.emit_to_dialect(
                    self.name, Dialect.NATIVE, "active_speaker", {"peer_id": self.speaker.dominant}
                )
                await self.refresh()

    async def close(self) -> None:
        self._speaker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._speaker_task

    def stats(self) -> dict[str, Any]:
        return {
            "peers": [peer.stats() for peer in self.peers.values()],
            "publications": len(self.publications()),
            "active_speaker": self.speaker.dominant,
            "datachannels": self.datachannels.stats(),
        }


class RelayMedia:
    """Media backend where the server is every participant's WebRTC peer."""

    mode = "relay"

    def __init__(
        self, settings: Settings, sio: socketio.AsyncServer, roster: Roster, audio: AudioHub
    ) -> None:
        check_aiortc_internals()
        use_fast_clock()
        self._settings = settings
        self._audio = audio
        self._ice_servers = [RTCIceServer(**server) for server in settings.ice_servers]
        self._signal = Signal(sio, roster)
        self._relay = MediaRelay()
        self._rooms: dict[str, RelayRoom] = {}
        self._peers: dict[str, MediaPeer] = {}
        # A client may receive from everyone else and publish a few tracks of its own.
        self._max_media_sections = 4 * settings.max_peers_per_room + 8

    def _peer_for(self, participant: Participant, room: str) -> MediaPeer:
        peer = self._peers.get(participant.sid)
        if peer is None:
            relay_room = self._rooms.get(room)
            if relay_room is None:
                relay_room = self._rooms[room] = RelayRoom(
                    room, self._signal, self._relay, self._audio
                )
            peer = MediaPeer(
                participant,
                relay_room,
                forwarding=self._settings.forwarding == "forward",
                connect_timeout=self._settings.media_timeout,
                ice_servers=self._ice_servers,
            )
            self._peers[participant.sid] = peer
            relay_room.peers[participant.sid] = peer
            relay_room.speaker.add(participant.peer_id)
        return peer

    async def on_join(self, participant: Participant, room: str) -> None:
        if participant.dialect is Dialect.VIDEO:
            # zoom-clone clients offer when welcomed: welcome them so they offer to us.
            await self._signal.send(participant, "welcome")

    async def on_leave(self, participant: Participant, room: str) -> None:
        peer = self._peers.pop(participant.sid, None)
        if peer is None:
            return
        relay_room = peer.room
        relay_room.peers.pop(participant.sid, None)
        relay_room.speaker.remove(participant.peer_id)
        await peer.close("left the room")
        if relay_room.peers:
            await relay_room.refresh()
        else:
            self._rooms.pop(relay_room.name, None)
            await relay_room.close()

    async def on_offer(self, participant: Participant, room: str, offer: dict[str, Any]) -> None:
        parsed = parse_offer(offer["sdp"], self._max_media_sections, offer.get("sources", {}))
        self._peer_for(participant, room).submit_offer(parsed)

    async def on_answer(self, participant: Participant, room: str, answer: dict[str, str]) -> None:
        raise ProtocolError(
            "no_pending_offer", "the server never sends offers, so it expects no answer"
        )

    async def on_ice(
        self, participant: Participant, room: str, candidate: IceCandidate | None
    ) -> None:
        peer = self._peers.get(participant.sid)
        if peer is None:
            raise ProtocolError("no_pending_offer", "send an offer before ICE candidates")
        await peer.add_candidate(parse_candidate(candidate) if candidate else None)

    def published(self, room: str) -> dict[str, int]:
        relay_room = self._rooms.get(room)
        return relay_room.published() if relay_room else {"audio": 0, "video": 0}

    def active_speaker(self, room: str) -> str | None:
        relay_room = self._rooms.get(room)
        return relay_room.speaker.dominant if relay_room else None

    def room_stats(self, room: str) -> dict[str, Any]:
        relay_room = self._rooms.get(room)
        return {"mode": self.mode, **(relay_room.stats() if relay_room else {"peers": []})}

    def stats(self) -> dict[str, Any]:
        peers = list(self._peers.values())
        return {
            "mode": self.mode,
            "forwarding": self._settings.forwarding,
            "audio": self._audio.stats(),
            "rooms": len(self._rooms),
            "peer_connections": sum(1 for peer in peers if peer.pc is not None),
            "publications": sum(len(peer.publications) for peer in peers),
            "slots": sum(len(peer.slots) for peer in peers),
            "subscriptions": sum(
                1 for peer in peers for slot in peer.slots if slot.source is not None
            ),
        }

    async def close(self) -> None:
        for peer in list(self._peers.values()):
            await peer.close("server shutting down")
        self._peers.clear()
        for relay_room in list(self._rooms.values()):
            await relay_room.close()
        self._rooms.clear()

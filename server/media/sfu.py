"""The SFU: the server answers every participant's offer and relays tracks within rooms.

It knows rooms by name and participants by ``peer_id``; the signaling side
registers participants (:meth:`Sfu.join`), passes their offers and candidates
on, and hears back through a :class:`~server.media.types.MediaListener`.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCIceServer
from aiortc.contrib.media import MediaRelay

from ..validation import IceCandidate, ProtocolError
from .aiortc_hooks import install_aiortc_hooks
from .latency import LatencyHistogram
from .offer import ParsedOffer, parse_candidate, parse_offer
from .peer import MediaPeer
from .publication import PublicationObserver
from .room import MediaRoom
from .types import (
    CloseReason,
    Kind,
    MediaConfig,
    MediaListener,
    RateGate,
    SlotPolicy,
)


def refuse_data() -> bool:
    """The data channel gate of a participant that may not send data."""
    raise ProtocolError("forbidden", "you may not send data (chat) in this room")


class Sfu:
    """Every room's media, by room name."""

    def __init__(
        self,
        config: MediaConfig,
        listener: MediaListener,
        observers: list[PublicationObserver] | None = None,
    ) -> None:
        install_aiortc_hooks()
        self.config = config
        self._listener = listener
        self._observers = list(observers or [])
        self._ice_servers = [RTCIceServer(**server) for server in config.ice_servers]
        self._relay = MediaRelay()
        # Packet arrival to subscriber send, every forwarded packet (raw buckets for exporters).
        self.forward_latency = LatencyHistogram()
        self._rooms: dict[str, MediaRoom] = {}  # each room holds the one index of its peers

    def _peer(self, room: str, peer_id: str) -> MediaPeer:
        media_room = self._rooms.get(room)
        peer = media_room.peers.get(peer_id) if media_room else None
        if peer is None:
            raise ProtocolError("not_in_room", "join a room first")
        return peer

    # -- what signaling tells us ------------------------------------------------------

    def join(
        self,
        room: str,
        peer_id: str,
        policy: SlotPolicy,
        rate_gate: RateGate,
        *,
        may_send_data: bool = True,
    ) -> None:
        """Register a participant of ``room``; it may offer from now on.

        ``rate_gate`` meters its data channel messages; with ``may_send_data`` off
        they are refused (``forbidden``).
        """
        media_room = self._rooms.get(room)
        if media_room is None:
            media_room = self._rooms[room] = MediaRoom(
                room,
                listener=self._listener,
                observers=self._observers,
                relay=self._relay,
                latency=self.forward_latency,
                config=self.config,
                ice_servers=self._ice_servers,
            )
        media_room.add(peer_id, policy, rate_gate if may_send_data else refuse_data)

    async def leave(self, room: str, peer_id: str) -> None:
        """The participant left ``room``: free its media; an empty room disappears."""
        media_room = self._rooms.get(room)
        if media_room is None:
            return
        await media_room.remove(peer_id, CloseReason.LEFT)
        if not media_room.peers and self._rooms.get(room) is media_room:
            del self._rooms[room]
            await media_room.close()

    async def resume(self, room: str, peer_id: str) -> None:
        """The participant lost what it was told meanwhile: tell it its media state again."""
        media_room = self._rooms.get(room)
        peer = media_room.peers.get(peer_id) if media_room else None
        if media_room is None or peer is None:
            return
        closed = peer.forget_reports()
        if closed is not None:
            await self._listener.media_closed(peer_id, closed)
        await media_room.reconcile()

    def parse_offer(self, sdp: str, sources: dict[str, str] | None = None) -> ParsedOffer:
        """Validate an offer (once, before anything else sees it); raises ProtocolError.

        ``sources`` names what the client's sending m-lines carry, by mid.
        """
        return parse_offer(sdp, self.config.max_media_sections, sources)

    def offer(self, room: str, peer_id: str, offer: ParsedOffer) -> None:
        """Queue a validated offer; the answer (or an error) arrives through the listener."""
        self._peer(room, peer_id).submit_offer(offer)

    async def ice(self, room: str, peer_id: str, candidate: IceCandidate | None) -> None:
        """A trickled candidate, or None at the end of the client's gathering."""
        peer = self._peer(room, peer_id)
        await peer.add_candidate(parse_candidate(candidate) if candidate else None)

    async def set_muted(self, room: str, peer_id: str, kind: Kind, muted: bool) -> None:
        """Stop (or resume) forwarding a participant's ``kind`` tracks to the others."""
        media_room = self._rooms.get(room)
        if media_room is None or peer_id not in media_room.peers:
            raise ProtocolError("not_in_room", "no such participant in this room")
        if muted:
            media_room.muted.add((peer_id, kind))
        else:
            media_room.muted.discard((peer_id, kind))
        await media_room.reconcile()

    # -- what signaling asks ------------------------------------------------------------

    def room_names(self) -> list[str]:
        return list(self._rooms)

    def published(self, room: str) -> dict[Kind, int]:
        media_room = self._rooms.get(room)
        return media_room.published() if media_room else {"audio": 0, "video": 0}

    def active_speaker(self, room: str) -> str | None:
        media_room = self._rooms.get(room)
        return media_room.speaker.dominant if media_room else None

    def room_stats(self, room: str) -> dict[str, Any]:
        media_room = self._rooms.get(room)
        return media_room.stats() if media_room else {"peers": []}

    def stats(self) -> dict[str, Any]:
        peers = [peer for room in self._rooms.values() for peer in room.peers.values()]
        return {
            "forwarding": "forward" if self.config.forwarding else "transcode",
            "rooms": len(self._rooms),
            "peer_connections": sum(1 for peer in peers if peer.pc is not None),
            "publications": sum(len(peer.publications) for peer in peers),
            "slots": sum(len(peer.slots) for peer in peers),
            "subscriptions": sum(
                1 for peer in peers for slot in peer.slots if slot.source is not None
            ),
        }

    async def close(self) -> None:
        for media_room in list(self._rooms.values()):
            await media_room.close()
        self._rooms.clear()

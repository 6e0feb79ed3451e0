"""Relay mode's signaling: Socket.IO participants in, SFU facts out, in each dialect's words.

The SFU (``server/media``) knows peer ids and room names only. This backend
registers each participant with the slot policy its dialect can take (native
clients renegotiate for every publisher; zoom-clone pages have one audio and one
video slot and follow the active speaker), passes offers and candidates on, and
turns what the SFU reports into events: ``answer`` for everyone, ``tracks``,
``renegotiate`` and ``media_closed`` for native clients, ``welcome`` so that a
zoom-clone page offers to the server, and ``error`` through the event router
(so that ``/stats`` counts it like any other refusal).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import socketio

from ..audio.hub import AudioHub
from ..events import EventRouter
from ..media.latency import LatencyHistogram
from ..media.offer import ParsedOffer
from ..media.publication import PublicationObserver
from ..media.sfu import Sfu
from ..media.types import (
    CloseReason,
    Kind,
    MediaConfig,
    MediaListener,
    RateGate,
    SlotInfo,
    SlotPolicy,
    UplinkQuality,
)
from ..rooms import Dialect, Participant, Roster
from ..validation import IceCandidate, ProtocolError
from .grant_checks import check_media_allowed

logger = logging.getLogger(__name__)


class SocketRoomOutput:
    """Audio consumers' results go to everyone in the room: Socket.IO events, and the same
    events as messages to members outside Socket.IO (/ws clients hear captions too)."""

    def __init__(self, sio: socketio.AsyncServer, roster: Roster | None = None) -> None:
        self._sio = sio
        self._roster = roster

    async def emit(self, room: str, event: str, data: dict[str, Any]) -> None:
        await self._sio.emit(event, data, to=room)  # every node's Socket.IO clients
        roster = self._roster
        if roster is None:
            return
        for member in roster.local_members(room):
            if member.outbox is not None:
                await member.outbox.deliver(event, data)
        if roster.others is not None:  # other nodes' members outside Socket.IO
            for dialect in Dialect:
                await roster.others.deliver_outside(room, dialect, event, data, None)


def slot_policy(dialect: Dialect | None) -> SlotPolicy:
    """Native clients ask for a slot per publisher; zoom-clone pages have fixed slots."""
    return SlotPolicy.EVERY_SOURCE if dialect is Dialect.NATIVE else SlotPolicy.FOLLOW_SPEAKER


class MediaCore(Protocol):
    """The SFU's interface: the in-process :class:`Sfu`, or rooms on media workers."""

    config: MediaConfig

    @property
    def forward_latency(self) -> LatencyHistogram: ...

    def join(
        self,
        room: str,
        peer_id: str,
        policy: SlotPolicy,
        rate_gate: RateGate,
        *,
        may_send_data: bool = True,
    ) -> None: ...

    async def resume(self, room: str, peer_id: str) -> None: ...

    async def leave(self, room: str, peer_id: str) -> None: ...

    def parse_offer(self, sdp: str, sources: dict[str, str] | None = None) -> ParsedOffer: ...

    def offer(self, room: str, peer_id: str, offer: ParsedOffer) -> None: ...

    async def ice(self, room: str, peer_id: str, candidate: IceCandidate | None) -> None: ...

    async def set_muted(self, room: str, peer_id: str, kind: Kind, muted: bool) -> None: ...

    def published(self, room: str) -> dict[Kind, int]: ...

    def active_speaker(self, room: str) -> str | None: ...

    def room_stats(self, room: str) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


MediaFactory = Callable[[MediaListener], MediaCore]


class RelayBackend:
    """Media backend where the server is every participant's WebRTC peer."""

    mode = "relay"

    def __init__(
        self,
        sio: socketio.AsyncServer,
        roster: Roster,
        router: EventRouter,
        config: MediaConfig,
        audio: AudioHub,
        observers: list[PublicationObserver] | None = None,
        media: MediaFactory | None = None,
    ) -> None:
        self._sio = sio
        self._roster = roster
        self._router = router
        self._audio = audio
        self._media: MediaCore = (
            media(self)
            if media is not None
            else Sfu(config, listener=self, observers=[audio, *(observers or [])])
        )

    # -- signaling -> SFU ------------------------------------------------------------

    async def on_join(self, participant: Participant, room: str) -> None:
        self._media.join(
            room,
            participant.peer_id,
            slot_policy(participant.dialect),
            participant.limiter.try_take,
            may_send_data=participant.grant.can_publish_data,
        )
        if participant.dialect is Dialect.VIDEO:
            # zoom-clone clients offer when welcomed: welcome them so they offer to us.
            await self._send(participant, "welcome")

    async def on_leave(self, participant: Participant, room: str) -> None:
        await self._media.leave(room, participant.peer_id)

    async def on_resume(self, participant: Participant, room: str) -> None:
        await self._media.resume(room, participant.peer_id)

    async def on_offer(self, participant: Participant, room: str, offer: dict[str, Any]) -> None:
        # Off the event loop: within the SDP budget a parse still costs up to ~40 ms.
        parsed = await asyncio.to_thread(
            self._media.parse_offer, offer["sdp"], offer.get("sources")
        )
        check_media_allowed(participant.grant, parsed.sections)
        self._media.offer(room, participant.peer_id, parsed)

    async def on_answer(self, participant: Participant, room: str, answer: dict[str, str]) -> None:
        raise ProtocolError(
            "no_pending_offer", "the server never sends offers, so it expects no answer"
        )

    async def on_ice(
        self, participant: Participant, room: str, candidate: IceCandidate | None
    ) -> None:
        await self._media.ice(room, participant.peer_id, candidate)

    async def set_muted(self, participant: Participant, room: str, kind: Kind, muted: bool) -> None:
        await self._media.set_muted(room, participant.peer_id, kind, muted)

    def published(self, room: str) -> dict[Kind, int]:
        return self._media.published(room)

    def active_speaker(self, room: str) -> str | None:
        return self._media.active_speaker(room)

    def room_stats(self, room: str) -> dict[str, Any]:
        return {"mode": self.mode, **self._media.room_stats(room)}

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, **self._media.stats(), "audio": self._audio.stats()}

    def forward_latency(self) -> LatencyHistogram | None:
        return self._media.forward_latency if self._media.config.forwarding else None

    async def close(self) -> None:
        await self._media.close()

    # -- SFU -> clients (the MediaListener) ------------------------------------------------

    async def _send(self, participant: Participant, event: str, data: Any = None) -> None:
        await self._roster.send(participant, event, data)

    def _native(self, peer_id: str) -> Participant | None:
        participant = self._roster.by_peer_id(peer_id)
        return participant if participant and participant.dialect is Dialect.NATIVE else None

    async def answer(self, peer_id: str, sdp: str) -> None:
        participant = self._roster.by_peer_id(peer_id)
        if participant is not None:
            await self._send(participant, "answer", {"type": "answer", "sdp": sdp})

    async def slots_changed(self, peer_id: str, slots: list[SlotInfo]) -> None:
        participant = self._native(peer_id)
        if participant is not None:
            tracks = [
                {"mid": s.mid, "kind": s.kind, "peer_id": s.peer_id, "source": s.source}
                for s in slots
            ]
            await self._send(participant, "tracks", {"tracks": tracks})

    async def renegotiation_needed(self, peer_id: str, wanted: dict[Kind, int]) -> None:
        participant = self._native(peer_id)
        if participant is not None and participant.grant.can_subscribe:
            await self._send(participant, "renegotiate", wanted)

    async def media_closed(self, peer_id: str, reason: CloseReason) -> None:
        participant = self._roster.by_peer_id(peer_id)
        if participant is None:
            return
        # Native clients reconnect; HTTP sessions (WHIP/WHEP) and /ws clients end or report it.
        if participant.dialect is Dialect.NATIVE or participant.outbox is not None:
            await self._send(participant, "media_closed", {"reason": reason.value})
        elif participant.dialect is Dialect.VIDEO and reason is CloseReason.MOVED:
            # A zoom-clone page offers again on every welcome (its room moved to a new worker).
            await self._send(participant, "welcome")

    async def speaker_changed(self, room: str, peer_id: str | None) -> None:
        await self._roster.emit_to_dialect(
            room, Dialect.NATIVE, "active_speaker", {"peer_id": peer_id}
        )

    async def uplink_quality(self, room: str, reports: list[UplinkQuality]) -> None:
        await self._roster.emit_to_dialect(
            room, Dialect.NATIVE, "quality", {"peers": [report.to_dict() for report in reports]}
        )

    async def error(self, peer_id: str, event: str, error: ProtocolError) -> None:
        participant = self._roster.by_peer_id(peer_id)
        if participant is not None:
            await self._router.reject(participant, event, error)

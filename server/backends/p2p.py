"""Peer-to-peer mode: browsers negotiate with each other, the server only passes messages.

This is exactly what the original zoom-clone Node server does: ``welcome`` to
the others when someone joins, and ``offer`` / ``answer`` / ``ice`` forwarded
to the rest of the room without the room name.
"""

from __future__ import annotations

from typing import Any

from ..media.types import Kind
from ..rooms import Dialect, Participant, Roster
from ..validation import IceCandidate, ProtocolError
from .grant_checks import check_media_allowed, scan_directions


class PeerToPeerBackend:
    """Forwards video-stage signalling between the members of a room."""

    mode = "p2p"

    def __init__(self, roster: Roster) -> None:
        self._roster = roster

    @staticmethod
    def _require_video_dialect(participant: Participant) -> None:
        if participant.dialect is not Dialect.VIDEO:
            raise ProtocolError(
                "unsupported",
                "this server runs in p2p mode: only zoom-clone video clients negotiate media",
            )

    async def _to_others(self, participant: Participant, room: str, event: str, data: Any) -> None:
        await self._roster.emit_to_dialect(room, Dialect.VIDEO, event, data, skip=participant.sid)

    async def on_join(self, participant: Participant, room: str) -> None:
        if participant.dialect is Dialect.VIDEO:
            await self._to_others(participant, room, "welcome", None)

    async def on_leave(self, participant: Participant, room: str) -> None:
        return None

    async def on_resume(self, participant: Participant, room: str) -> None:
        return None  # browsers keep their own peer connections to each other

    async def on_offer(self, participant: Participant, room: str, offer: dict[str, Any]) -> None:
        self._require_video_dialect(participant)
        check_media_allowed(participant.grant, scan_directions(offer["sdp"]))
        await self._to_others(participant, room, "offer", offer)

    async def on_answer(self, participant: Participant, room: str, answer: dict[str, str]) -> None:
        self._require_video_dialect(participant)
        check_media_allowed(participant.grant, scan_directions(answer["sdp"]))
        await self._to_others(participant, room, "answer", answer)

    async def on_ice(
        self, participant: Participant, room: str, candidate: IceCandidate | None
    ) -> None:
        self._require_video_dialect(participant)
        # A lone None must travel as (None,): data=None would send no argument at all.
        payload = (candidate.as_dict() if candidate else None,)
        await self._to_others(participant, room, "ice", payload)

    async def set_muted(self, participant: Participant, room: str, kind: Kind, muted: bool) -> None:
        raise ProtocolError(
            "unsupported", "muting others needs --media relay (in p2p mode media bypasses us)"
        )

    def published(self, room: str) -> dict[Kind, int]:
        return {"audio": 0, "video": 0}  # nothing is published to the server in p2p mode

    def active_speaker(self, room: str) -> str | None:
        return None  # browsers exchange media directly: the server hears nothing

    def room_stats(self, room: str) -> dict[str, Any]:
        return {"mode": self.mode}

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def forward_latency(self) -> None:
        return None  # media never passes through the server

    async def close(self) -> None:
        return None

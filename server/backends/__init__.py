"""Media backends: how room signaling drives whatever carries the media.

``p2p``: browsers negotiate with each other and the server passes messages on.
``relay``: the server's SFU (``server/media``) answers every offer; the backend
translates between Socket.IO participants and the SFU's peer ids and facts.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..media.latency import LatencyHistogram
from ..media.types import Kind
from ..rooms import Participant
from ..validation import IceCandidate


class MediaBackend(Protocol):
    """Receives every media-related signalling event of joined participants."""

    mode: str

    async def on_join(self, participant: Participant, room: str) -> None:
        """``participant`` has entered ``room`` (already a member)."""

    async def on_leave(self, participant: Participant, room: str) -> None:
        """``participant`` is leaving ``room`` (still a member); free its media."""

    async def on_resume(self, participant: Participant, room: str) -> None:
        """``participant`` came back on a new connection (resumption.py): bring it up to date."""

    async def on_offer(self, participant: Participant, room: str, offer: dict[str, Any]) -> None:
        """An SDP offer from ``participant``."""

    async def on_answer(self, participant: Participant, room: str, answer: dict[str, str]) -> None:
        """An SDP answer from ``participant``."""

    async def on_ice(
        self, participant: Participant, room: str, candidate: IceCandidate | None
    ) -> None:
        """A trickled ICE candidate, or None at the end of gathering."""

    async def set_muted(self, participant: Participant, room: str, kind: Kind, muted: bool) -> None:
        """Stop (or resume) sending ``participant``'s ``kind`` to the rest of the room."""

    def published(self, room: str) -> dict[Kind, int]:
        """How many tracks of each kind the room's participants publish to the server."""

    def active_speaker(self, room: str) -> str | None:
        """The peer id of the room's dominant speaker, if the server knows it."""

    def room_stats(self, room: str) -> dict[str, Any]:
        """Media facts about one room for ``GET /rooms``."""

    def stats(self) -> dict[str, Any]:
        """Media facts about the whole server for ``GET /stats``."""

    def forward_latency(self) -> LatencyHistogram | None:
        """Packet arrival to subscriber send, when the server forwards media itself."""

    async def close(self) -> None:
        """Release everything at shutdown."""

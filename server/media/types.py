"""The media core's vocabulary: what it is told, and the facts it reports upward.

The media core (this package) knows rooms by name, participants by ``peer_id``,
tracks and slot policies. It knows nothing of Socket.IO, client dialects or the
server's settings: the signaling side registers participants with a
:class:`SlotPolicy`, and turns each fact reported through :class:`MediaListener`
into its own clients' words.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ..validation import ProtocolError

Kind = Literal["audio", "video"]
KINDS: tuple[Kind, ...] = ("audio", "video")


class SlotPolicy(enum.Enum):
    """How a participant's receive slots are filled from the room's publications."""

    EVERY_SOURCE = "every_source"  # one slot per other publication; asks for more slots
    FOLLOW_SPEAKER = "follow_speaker"  # fixed slots carrying the most recent speakers


class CloseReason(enum.Enum):
    """Why the server closed a participant's peer connection (values are what clients see)."""

    CONNECTION_FAILED = "connection failed"
    CONNECTION_CLOSED = "connection closed"
    CONNECT_TIMEOUT = "media_timeout"
    REPLACED = "replaced by a new peer connection"
    OFFER_REJECTED = "offer rejected"
    LEFT = "left the room"
    SHUTDOWN = "server shutting down"
    MOVED = "moved to another media worker"  # the room's worker process was lost

    @property
    def client_must_reconnect(self) -> bool:
        """Whether the participant should be told to build a new connection."""
        return self in (
            CloseReason.CONNECTION_FAILED,
            CloseReason.CONNECTION_CLOSED,
            CloseReason.CONNECT_TIMEOUT,
            CloseReason.MOVED,
        )


@dataclass(frozen=True)
class SlotInfo:
    """One receive slot as a participant sees it: its m-line and whose track it carries."""

    mid: str | None
    kind: Kind
    peer_id: str | None  # None: the slot is idle
    source: str | None = None  # what it carries: microphone, camera, screen, screen_audio


@dataclass(frozen=True)
class UplinkQuality:
    """One participant's uplink over the last interval."""

    peer_id: str
    level: str
    loss: float  # fraction of its packets lost on the way to the server
    rtt_ms: float | None  # from its receiver reports on what the server sends it
    kbps: float  # RTP payload received from it
    fps: float | None  # frames of its video, when it publishes video

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MediaConfig:
    """The few settings the media core needs."""

    forwarding: bool = True  # forward encoded frames; False: decode and re-encode (baseline)
    connect_timeout: float = 30.0  # seconds a peer connection may take to come up
    ice_servers: tuple[dict[str, Any], ...] = ()
    max_media_sections: int = 72  # m-lines accepted in one offer
    max_publish_bitrate: int = 0  # bits/s one published track may use (0: no cap)


class MediaListener(Protocol):
    """Facts the media core reports; the signaling side turns them into client events."""

    async def answer(self, peer_id: str, sdp: str) -> None:
        """The server's answer to the participant's latest offer."""

    async def slots_changed(self, peer_id: str, slots: list[SlotInfo]) -> None:
        """Which publisher each of the participant's receive slots now carries."""

    async def renegotiation_needed(self, peer_id: str, wanted: dict[Kind, int]) -> None:
        """The participant should offer again with this many receive slots of each kind."""

    async def media_closed(self, peer_id: str, reason: CloseReason) -> None:
        """The server closed the participant's peer connection; it should make a new one."""

    async def speaker_changed(self, room: str, peer_id: str | None) -> None:
        """The room's dominant speaker changed."""

    async def uplink_quality(self, room: str, reports: list[UplinkQuality]) -> None:
        """Every few seconds: each publisher's uplink (loss, round trip, bitrate, frame rate)."""

    async def error(self, peer_id: str, event: str, error: ProtocolError) -> None:
        """A request of the participant's (``offer``, ``ice``, ``datachannel``) failed."""


RateGate = Callable[[], bool]  # takes one token from a participant's rate limit, or refuses

"""A track one participant sends to the server, offered to everyone else in the room."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE

if TYPE_CHECKING:
    from av.frame import Frame

    from .outbound import OutboundTrack

logger = logging.getLogger(__name__)

# ssrc-audio-level is -dBov: 0 is the loudest, 127 silence.
SILENCE_DBOV = 127


class ServerClockVideo(MediaStreamTrack):
    """Re-stamps decoded video frames with the server's clock.

    Each publisher's frames carry their own timeline, but a subscriber's slot
    may switch publishers, and its VP8 encoder refuses timestamps that go
    backwards. Stamping once here, before ``MediaRelay`` shares the frame
    object among subscribers, keeps every slot's timeline monotonic without a
    per-subscriber copy (encoders read ``pts`` from other threads).
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source
        self._last_pts = -1

    async def recv(self) -> Frame:
        frame = await self._source.recv()
        pts = max(int(time.monotonic() * VIDEO_CLOCK_RATE), self._last_pts + 1)
        frame.pts, frame.time_base, self._last_pts = pts, VIDEO_TIME_BASE, pts
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class Publication:
    """One published audio or video track: decoded once, shared through ``MediaRelay``.

    Every inbound track is drained from the moment it exists (aiortc's receiver
    queue is unbounded), and each subscriber gets its own relay proxy that keeps
    only the latest frame, so a slow subscriber skips frames instead of growing
    memory.
    """

    def __init__(self, peer_id: str, mid: str, receiver: RTCRtpReceiver, relay: MediaRelay) -> None:
        self.peer_id = peer_id
        self.mid = mid
        self.kind: str = receiver.track.kind
        self.receiver = receiver
        self.track: MediaStreamTrack = (
            ServerClockVideo(receiver.track) if self.kind == "video" else receiver.track
        )
        self._relay = relay
        self._drain = MediaBlackhole()
        self._drain.addTrack(relay.subscribe(self.track, buffered=False))
        self.subscribers: set[OutboundTrack] = set()
        self.audio_level_dbov = SILENCE_DBOV
        self.closed = False

    @property
    def key(self) -> str:
        return f"{self.peer_id}:{self.mid}"

    async def start(self) -> None:
        await self._drain.start()

    def decoded(self) -> MediaStreamTrack:
        """A new relay proxy of the decoded track for one consumer (latest frame only)."""
        return self._relay.subscribe(self.track, buffered=False)

    async def close(self) -> None:
        """End the publication: every subscriber lets go of it, the drain stops."""
        if self.closed:
            return
        self.closed = True
        for subscriber in list(self.subscribers):
            subscriber.detach()
        await self._drain.stop()

    def __repr__(self) -> str:
        return f"Publication({self.key}, {self.kind})"

"""Encoded media as the server forwards it: whole frames, never decoded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

H264_IDR, H264_SPS = 5, 7


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One reassembled encoded frame from a publisher (RTP timestamp units)."""

    data: bytes
    timestamp: int
    clock_rate: int
    keyframe: bool


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether a whole encoded frame can be decoded on its own."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return bool(data) and not data[0] & 0x01  # P bit clear: key frame (RFC 6386 9.1)
    if mime == "video/h264":
        return any(nal_type in (H264_IDR, H264_SPS) for nal_type in _h264_nal_types(data))
    return True  # audio frames are independent


def _h264_nal_types(data: bytes) -> list[int]:
    """NAL unit types in an Annex B byte stream (as aiortc's depayloader produces)."""
    types, start = [], data.find(b"\x00\x00\x01")
    while start != -1 and start + 3 < len(data):
        types.append(data[start + 3] & 0x1F)
        start = data.find(b"\x00\x00\x01", start + 3)
    return types


class KeyframeRequests:
    """Coalesces keyframe requests for one publisher: at most one per ``interval``.

    Many subscribers asking at once (a join, a switch, packet loss) cost the
    publisher one keyframe; a request inside the quiet interval is deferred to
    its end rather than dropped, so nobody waits forever.
    """

    def __init__(
        self,
        send: Callable[[], Awaitable[None]],
        interval: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._last = -interval
        self._deferred: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.requested = 0

    def request(self) -> None:
        self.requested += 1
        if self._deferred is not None:
            return
        wait = self._last + self._interval - self._clock()
        if wait <= 0:
            self._fire()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._deferred = None
        self._last = self._clock()
        self.sent += 1
        task = asyncio.ensure_future(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

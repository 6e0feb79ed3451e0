"""The track behind each outgoing m-line ("slot") of a subscriber's peer connection.

An ``RTCRtpSender`` stops for good when its track raises ``MediaStreamError``,
and ``replaceTrack`` only takes effect after the old track yields a frame. So a
slot keeps one track for its whole life and switches *what feeds it* instead.

A slot is fed one of two ways, chosen per publication:

* **forwarded**: the publisher's encoded frames, unchanged, as ``av.Packet``; the
  sender only re-packetizes them. Used whenever the slot's codec is the
  publisher's codec.
* **decoded**: frames from the publication's ``MediaRelay`` proxy, which the
  sender encodes itself. The fallback for a codec mismatch, and the whole of
  the ``transcode`` baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import av
from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError

from .aiortc_hooks import (
    force_encoder_keyframe,
    negotiated_codecs,
    route_keyframe_requests,
    use_lean_rtp_loop,
)
from .encoded import EncodedFrame
from .publication import DecodedSubscription, EncodedSubscription, Publication
from .types import Kind, SlotInfo

if TYPE_CHECKING:
    from av.frame import Frame

logger = logging.getLogger(__name__)

# Frames a slot may fall behind before it drops: ~1 s of video at 30 fps, 1 s of audio.
MAX_QUEUED = {"video": 32, "audio": 50}


@functools.cache
def time_base(clock_rate: int) -> fractions.Fraction:
    return fractions.Fraction(1, clock_rate)


class ForwardedPacket:
    """What a forwarding slot hands its sender: an encoded frame, its timestamp and clock.

    aiortc's VP8 and audio packetizers only need ``bytes(packet)``, ``pts`` and
    ``time_base``; this avoids copying every frame into and out of an ``av.Packet``
    per subscriber. (Its H.264 packetizer insists on ``av.Packet``.)
    """

    __slots__ = ("data", "pts", "time_base")

    def __init__(self, data: bytes, pts: int, clock_rate: int) -> None:
        self.data = data
        self.pts = pts
        self.time_base = time_base(clock_rate)

    def __bytes__(self) -> bytes:
        return self.data


class Slot(MediaStreamTrack):
    """An m-line on which the server sends one relayed track, and the track its sender reads.

    Forwards encoded frames when it can, decodes and re-encodes when it must.
    Which publication feeds it can change at any time (:meth:`attach`).
    """

    def __init__(self, transceiver: RTCRtpTransceiver, *, forwarding: bool) -> None:
        super().__init__()
        self.kind = cast("Kind", transceiver.kind)
        self.transceiver = transceiver
        self.codec: str | None = None  # the codec of its first answer; its sender keeps it
        self._forwarding = forwarding
        self._subscription: EncodedSubscription | DecodedSubscription | None = None
        self._closing = False
        self._queue: deque[EncodedFrame] = deque()
        self._max_queued = MAX_QUEUED[self.kind]
        self._wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._needs_av_packet = False
        self._awaiting_keyframe = False
        self._offset: int | None = None
        self._last_out: tuple[int, float] | None = None  # (timestamp, wall clock) last sent
        self._sending = False  # whether the sender has started reading
        self.dropped = 0
        self.forwarded_frames = 0
        if forwarding:
            route_keyframe_requests(transceiver.sender, self.keyframe_requested)
            use_lean_rtp_loop(transceiver.sender)

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def source(self) -> Publication | None:
        """The publication feeding this slot, if any."""
        return self._subscription.publication if self._subscription else None

    @property
    def source_peer(self) -> str | None:
        """Whose track the slot carries (its MediaStream id), if anyone's."""
        return self._subscription.publication.peer_id if self._subscription else None

    @property
    def codec_mime(self) -> str:
        """The codec this slot's sender uses (the first agreed one)."""
        return negotiated_codecs(self.transceiver)[0].mimeType.lower()

    @property
    def mode(self) -> str | None:
        if self._subscription is None:
            return None
        return "forward" if isinstance(self._subscription, EncodedSubscription) else "decode"

    def info(self) -> SlotInfo:
        source = self._subscription.publication.source if self._subscription else None
        return SlotInfo(self.mid, cast("Kind", self.kind), self.source_peer, source)

    # -- switching sources -------------------------------------------------------------

    def attach(self, publication: Publication, *, again: bool = False) -> None:
        """Feed from ``publication``; ``again`` re-decides the mode after a codec change."""
        if publication is self.source and not again:
            return
        self.detach()
        self._offset = None
        if (
            self._forwarding
            and publication.forwardable
            and (publication.mime_type == self.codec_mime)
        ):
            self._needs_av_packet = publication.mime_type == "video/h264"
            self._awaiting_keyframe = self.kind == "video"
            self._subscription = publication.subscribe_encoded(self, on_ended=self.detach)
            publication.request_keyframe()
        else:
            self._subscription = publication.subscribe_decoded(on_ended=self.detach)
            if self.kind == "video":
                force_encoder_keyframe(self.transceiver.sender)
        self._wake()

    def detach(self) -> None:
        """Stop feeding this slot; the sender waits quietly until the next attach."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()
        self._queue.clear()
        self._wake()

    def close(self) -> None:
        """End the slot: the server no longer sends on this m-line."""
        self._closing = True
        self.stop()

    def stop(self) -> None:
        if not self._closing and self.readyState == "live":
            # aiortc's sender stops its track when it ends: the connection closed, or an
            # encoder error (which aiortc logs itself, with a traceback).
            logger.debug("a %s sender stopped before its slot was closed", self.kind)
        self.detach()
        super().stop()

    def keyframe_requested(self) -> None:
        """The subscriber sent PLI/FIR: ask whoever produces this slot's frames."""
        if self._subscription is None:
            return
        if isinstance(self._subscription, EncodedSubscription):
            self._subscription.publication.request_keyframe()
        else:
            force_encoder_keyframe(self.transceiver.sender)

    # -- forwarding ----------------------------------------------------------------------

    def push(self, frame: EncodedFrame) -> None:
        """A new encoded frame from the source (called on the event loop)."""
        if self._awaiting_keyframe:
            if not frame.keyframe:
                return
            self._awaiting_keyframe = False
        if len(self._queue) >= self._max_queued:
            self.dropped += len(self._queue) if self.kind == "video" else 1
            if self.kind == "video":
                # A missing frame smears everything after it: wait for a fresh keyframe.
                self._queue.clear()
                self._awaiting_keyframe = not frame.keyframe
                if self._awaiting_keyframe:
                    if self._subscription is not None:
                        self._subscription.publication.request_keyframe()
                    return
            else:
                self._queue.popleft()
        self._queue.append(frame)
        self._wake()

    def _packet(self, frame: EncodedFrame) -> av.Packet | ForwardedPacket:
        """Wrap a frame for the sender, on a timeline that stays continuous across sources."""
        now = time.monotonic()
        if self._offset is None:
            if self._last_out is None:
                self._offset = -frame.timestamp
            else:
                last_timestamp, last_time = self._last_out
                step = max(1, int((now - last_time) * frame.clock_rate))
                self._offset = last_timestamp + step - frame.timestamp
        timestamp = frame.timestamp + self._offset
        self._last_out = (timestamp, now)
        self.forwarded_frames += 1
        if self._needs_av_packet:
            packet = av.Packet(frame.data)
            packet.pts, packet.time_base = timestamp, time_base(frame.clock_rate)
            return packet
        return ForwardedPacket(frame.data, timestamp, frame.clock_rate)

    # -- the sender's side -----------------------------------------------------------------

    def _wake(self) -> None:
        if not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _sleep(self) -> None:
        if self._wakeup.done():
            self._wakeup = asyncio.get_running_loop().create_future()
        await self._wakeup

    # aiortc's senders take anything with bytes(), pts and time_base, hence ForwardedPacket.
    async def recv(self) -> av.Packet | ForwardedPacket | Frame:  # type: ignore[override]
        if not self._sending:
            # The sender starts once DTLS is up, well after the slot was attached: a
            # keyframe requested then may have come and gone, so ask again now.
            self._sending = True
            if self._awaiting_keyframe and self._subscription is not None:
                self._subscription.publication.request_keyframe()
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                return self._packet(self._queue.popleft())
            subscription = self._subscription
            if not isinstance(subscription, DecodedSubscription):
                await self._sleep()
                continue
            frame = await self._next_decoded(subscription)
            if frame is not None:
                return frame

    async def _next_decoded(self, subscription: DecodedSubscription) -> Frame | av.Packet | None:
        """The proxy's next frame, or None if the slot was switched meanwhile."""
        if self._wakeup.done():
            self._wakeup = asyncio.get_running_loop().create_future()
        wakeup = self._wakeup
        pending = asyncio.ensure_future(subscription.track.recv())
        try:
            await asyncio.wait((pending, wakeup), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the sender itself is cancelled while we wait
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                    await pending
        if pending.cancelled():
            return None
        try:
            return pending.result()
        except MediaStreamError:
            if subscription is self._subscription:  # the source ended: wait for the next attach
                self.detach()
            return None

    def stats(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "codec": self.codec_mime,
            "forwarded": self.forwarded_frames,
            "dropped": self.dropped,
            "queued": len(self._queue),
        }

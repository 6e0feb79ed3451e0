"""The track behind each outgoing m-line ("slot") of a subscriber's peer connection.

An ``RTCRtpSender`` stops for good when its track raises ``MediaStreamError``,
and ``replaceTrack`` only takes effect after the old track yields a frame. So a
slot keeps one track for its whole life and switches *what feeds it* instead.

A slot is fed one of two ways, chosen per publication:

* **forwarded**: the publisher's RTP packets, as they arrive, rewritten for this
  subscriber by a :class:`PacketForwarder` (no jitter buffer, no re-packetizing).
  Used whenever the slot's codec is the publisher's codec.
* **decoded**: frames from the publication's ``MediaRelay`` proxy, which the
  sender encodes itself. The fallback for a codec mismatch; its packets go
  through the same forwarder, so the stream stays continuous across modes. In
  the ``transcode`` baseline aiortc's own sender loop does everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, cast

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from ..tasks import cancel_and_wait
from .aiortc_hooks import (
    force_encoder_keyframe,
    negotiated_codecs,
    next_encoded_frame,
    replace_rtp_loop,
    route_keyframe_requests,
)
from .forwarder import PacketForwarder
from .latency import LatencyHistogram
from .publication import DecodedSubscription, EncodedSubscription, Publication
from .rtp_rewrite import PacketHistory, SourcePacket, starts_frame, starts_keyframe
from .types import Kind, SlotInfo

if TYPE_CHECKING:
    from av.frame import Frame

logger = logging.getLogger(__name__)


class Slot(MediaStreamTrack):
    """An m-line on which the server sends one relayed track, and the track its sender reads.

    Forwards packets when it can, decodes and re-encodes when it must. Which
    publication feeds it can change at any time (:meth:`attach`).
    """

    def __init__(
        self,
        transceiver: RTCRtpTransceiver,
        *,
        forwarding: bool,
        latency: LatencyHistogram | None = None,
    ) -> None:
        super().__init__()
        self.kind = cast("Kind", transceiver.kind)
        self.transceiver = transceiver
        self.codec: str | None = None  # the codec of its first answer; its sender keeps it
        self._subscription: EncodedSubscription | DecodedSubscription | None = None
        self._closing = False
        self._wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._encoder_history = PacketHistory(256)
        self._encoder_sequence_number = 0
        self.forwarder: PacketForwarder | None = None
        if forwarding:
            self.forwarder = PacketForwarder(
                transceiver.sender,
                self.kind,
                latency or LatencyHistogram(),
                self.keyframe_requested,
            )
            route_keyframe_requests(transceiver.sender, self.keyframe_requested)
            replace_rtp_loop(transceiver.sender, self._run_sender)

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

    @property
    def estimate(self) -> int | None:
        """The subscriber's bandwidth estimate for this slot (bits/s), if it sent one lately."""
        return self.forwarder.estimate if self.forwarder is not None else None

    def info(self) -> SlotInfo:
        source = self._subscription.publication.source if self._subscription else None
        return SlotInfo(self.mid, cast("Kind", self.kind), self.source_peer, source)

    # -- switching sources -------------------------------------------------------------

    def attach(self, publication: Publication, *, again: bool = False) -> None:
        """Feed from ``publication``; ``again`` re-decides the mode after a codec change."""
        if publication is self.source and not again:
            return
        self.detach()
        if (
            self.forwarder is not None
            and publication.forwardable
            and (publication.mime_type == self.codec_mime)
        ):
            # Even the same source again (unmuted, say) skipped packets meanwhile: the
            # stream picks up at its next keyframe, numbered on from where it stopped.
            self.forwarder.resync()
            self._subscription = publication.subscribe_encoded(self, on_ended=self.detach)
            publication.request_keyframe()
        else:
            self._encoder_history = PacketHistory(256)  # a new source for the rewriter
            self._subscription = publication.subscribe_decoded(on_ended=self.detach)
            if self.kind == "video":
                force_encoder_keyframe(self.transceiver.sender)
        self._wake()

    def detach(self) -> None:
        """Stop feeding this slot; the sender waits quietly until the next attach."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()
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
        if self.forwarder is not None:
            self.forwarder.stop()
        super().stop()

    def keyframe_requested(self) -> None:
        """The subscriber sent PLI/FIR: ask whoever produces this slot's packets."""
        if self._subscription is None:
            return
        if isinstance(self._subscription, EncodedSubscription):
            self._subscription.publication.request_keyframe()
        else:
            force_encoder_keyframe(self.transceiver.sender)

    # -- forwarding ----------------------------------------------------------------------

    def push(self, packet: SourcePacket) -> None:
        """A packet from the source, as it arrived (called on the event loop)."""
        if self.forwarder is not None:
            self.forwarder.push(packet)

    async def _run_sender(self, codec: RTCRtpCodecParameters) -> None:
        """The sender's RTP task: starts the forwarder, then encodes decoded frames if asked."""
        assert self.forwarder is not None
        self.forwarder.start(codec, negotiated_codecs(self.transceiver))
        # The sender starts once DTLS is up, well after the slot was attached: a
        # keyframe requested then may have come and gone, so ask again now.
        self.keyframe_requested()
        mime = codec.mimeType
        try:
            while True:
                frame = await next_encoded_frame(self.transceiver.sender, codec)
                if frame is None:
                    continue
                arrival = time.perf_counter()
                level = None if frame.audio_level is None else min(127, -frame.audio_level)
                last = len(frame.payloads) - 1
                for index, payload in enumerate(frame.payloads):
                    packet = SourcePacket(
                        self._encoder_history,
                        self._encoder_sequence_number,
                        frame.timestamp,
                        index == last,
                        payload,
                        codec.clockRate,
                        keyframe=starts_keyframe(mime, payload),
                        frame_start=starts_frame(mime, payload),
                        audio_level=level,
                        arrival=arrival,
                    )
                    self._encoder_history.add(packet)
                    self._encoder_sequence_number = (self._encoder_sequence_number + 1) % (1 << 16)
                    self.forwarder.push(packet)
        finally:
            self.forwarder.stop()

    # -- the sender's side (decoded frames only) ---------------------------------------------

    def _wake(self) -> None:
        if not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _sleep(self) -> None:
        if self._wakeup.done():
            self._wakeup = asyncio.get_running_loop().create_future()
        await self._wakeup

    async def recv(self) -> Frame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            subscription = self._subscription
            if not isinstance(subscription, DecodedSubscription):
                await self._sleep()
                continue
            frame = await self._next_decoded(subscription)
            if frame is not None:
                return frame

    async def _next_decoded(self, subscription: DecodedSubscription) -> Frame | None:
        """The proxy's next frame, or None if the slot was switched meanwhile."""
        if self._wakeup.done():
            self._wakeup = asyncio.get_running_loop().create_future()
        wakeup = self._wakeup
        pending = asyncio.ensure_future(subscription.track.recv())
        try:
            await asyncio.wait((pending, wakeup), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the sender itself is cancelled while we wait
            with contextlib.suppress(MediaStreamError):
                await cancel_and_wait(pending)
        if pending.cancelled():
            return None
        try:
            return cast("Frame", pending.result())
        except MediaStreamError:
            if subscription is self._subscription:  # the source ended: wait for the next attach
                self.detach()
            return None

    def stats(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "codec": self.codec_mime,
            **(self.forwarder.stats() if self.forwarder is not None else {}),
        }

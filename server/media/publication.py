"""A track one participant sends to the server, offered to everyone else in the room."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from ..tasks import cancel_and_wait
from .aiortc_hooks import (
    end_track_of_unstarted_receiver,
    intercept_rtp,
    negotiated_codecs,
    relay_remb,
    send_keyframe_request,
    tap_encoded_frames,
)
from .encoded import KeyframeRequests
from .policing import ByteBudget, capped
from .rtp_rewrite import PacketHistory, SourcePacket, starts_frame, starts_keyframe
from .types import Kind

if TYPE_CHECKING:
    from av import VideoFrame
    from av.frame import Frame

logger = logging.getLogger(__name__)

# A subscriber's REMB lowers what its publisher sends, but never below this (bits/s):
# one subscriber on a very poor link must not ruin the picture for a whole room.
REMB_FLOOR = 150_000
REMB_INTERVAL = 1.0  # seconds between relayed estimates
HISTORY_PACKETS = {"video": 512, "audio": 128}  # ~several seconds either way


class EncodedSink(Protocol):
    """Receives a publication's RTP packets as they arrive (a forwarding slot)."""

    def push(self, packet: SourcePacket) -> None: ...

    @property
    def estimate(self) -> int | None: ...


class PublicationObserver(Protocol):
    """Something that wants every publication of every room (the server's audio tap)."""

    def publication_added(self, room: str, publication: Publication) -> None: ...

    def publication_removed(self, publication: Publication) -> None: ...


class Subscription:
    """One consumer's hold on a publication; ``close()`` undoes all of it.

    Modelled on ``MediaRelay.subscribe()``, whose proxy unregisters itself when
    stopped: the subscriber owns the handle, the publication owns the set of
    handles, and nobody edits the other's bookkeeping. When the publication
    ends first it calls ``on_ended`` (the subscriber then closes its handle).
    """

    def __init__(self, publication: Publication, on_ended: Callable[[], None] | None) -> None:
        self.publication = publication
        self._on_ended = on_ended
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.publication._unsubscribe(self)

    def ended(self) -> None:
        """The publication ended: tell the subscriber, then let go."""
        if self._on_ended is not None:
            self._on_ended()
        self.close()


class EncodedSubscription(Subscription):
    """Forwarded packets, pushed to ``sink`` as they arrive; nothing is decoded for it."""

    def __init__(
        self, publication: Publication, sink: EncodedSink, on_ended: Callable[[], None] | None
    ) -> None:
        super().__init__(publication, on_ended)
        self.sink = sink


class DecodedSubscription(Subscription):
    """A ``MediaRelay`` proxy of the decoded track; the decoder runs while any exists."""

    def __init__(
        self,
        publication: Publication,
        track: MediaStreamTrack,
        on_ended: Callable[[], None] | None,
    ) -> None:
        super().__init__(publication, on_ended)
        self.track = track

    def close(self) -> None:
        if not self.closed:
            self.track.stop()
        super().close()


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
        frame = cast("VideoFrame", await self._source.recv())
        pts = max(int(time.monotonic() * VIDEO_CLOCK_RATE), self._last_pts + 1)
        frame.pts, frame.time_base, self._last_pts = pts, VIDEO_TIME_BASE, pts
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class Publication:
    """One published audio or video track, available encoded and decoded.

    *Encoded*: with ``forward=True`` every RTP packet is handed to the encoded
    subscriptions as it arrives, before aiortc's jitter buffer, and kept a
    moment in a history for retransmissions; nothing is decoded or re-encoded
    for them. Their lowest bandwidth estimate is relayed to the publisher.

    *Decoded*: consumers that need frames (a subscriber that cannot take the
    publisher's codec, the audio tap, the ``transcode`` baseline) get a
    ``MediaRelay`` proxy; in forward mode the decoder only runs while at least
    one of them exists. The decoded track is drained from the start, because
    aiortc queues decoded frames without limit.
    """

    def __init__(
        self,
        peer_id: str,
        transceiver: RTCRtpTransceiver,
        relay: MediaRelay,
        *,
        forward: bool,
        source: str = "",
        max_bitrate: int = 0,
    ) -> None:
        """``max_bitrate`` (bits/s, 0: none) caps what the publisher is told to send and,
        when forwarding, what it may send: packets beyond it are dropped."""
        receiver = transceiver.receiver
        self.peer_id = peer_id
        self.source = source  # microphone, camera, screen or screen_audio
        self.mid: str = transceiver.mid or ""
        self.kind = cast("Kind", receiver.track.kind)
        self.receiver = receiver
        self.codec: RTCRtpCodecParameters = negotiated_codecs(transceiver)[0]
        self.track: MediaStreamTrack = (
            ServerClockVideo(receiver.track) if self.kind == "video" else receiver.track
        )
        self._relay = relay
        self._drain = MediaBlackhole()
        self._drain.addTrack(relay.subscribe(self.track, buffered=False))
        self._tap = tap_encoded_frames(receiver) if forward else None
        self._encoded: list[EncodedSubscription] = []
        self._decoded: list[DecodedSubscription] = []
        self.keyframes = KeyframeRequests(
            lambda fir_sequence: send_keyframe_request(receiver, fir_sequence),
            activity=lambda: self.packets_received,
            name=f"{peer_id}'s {self.kind} (mid {self.mid})",
        )
        self.history = PacketHistory(HISTORY_PACKETS[self.kind])
        self.packets_received = 0
        self.octets_received = 0  # RTP payload bytes
        self.frames_received = 0
        self.keyframes_received = 0
        self._own_estimate: int | None = None
        self._max_bitrate = max_bitrate
        self._budget = ByteBudget(max_bitrate) if max_bitrate else None
        self._remb_task: asyncio.Task[None] | None = None
        self._send_remb: Callable[[int], Awaitable[None]] | None = None
        if forward:
            codecs = negotiated_codecs(transceiver)
            rtx: dict[int, int] = {
                c.payloadType: cast("int", c.parameters["apt"])
                for c in codecs
                if c.mimeType.lower().endswith("/rtx")
                and c.payloadType is not None
                and isinstance(c.parameters.get("apt"), int)
            }
            intercept_rtp(receiver, self._on_rtp, rtx)
            if self.kind == "video":
                self._send_remb = relay_remb(receiver, self._cap_estimate)
        self.closed = False

    @property
    def key(self) -> str:
        return f"{self.peer_id}:{self.mid}"

    @property
    def forwardable(self) -> bool:
        return self._tap is not None

    @property
    def mime_type(self) -> str:
        return self.codec.mimeType.lower()

    async def start(self) -> None:
        await self._drain.start()
        if self._send_remb is not None:
            self._remb_task = asyncio.create_task(self._relay_estimates())

    def _on_rtp(self, rtp: RtpPacket) -> None:
        """One packet from the publisher: into the history, then to every subscriber."""
        arrival = time.perf_counter()
        if self.history.get(rtp.sequence_number) is not None:
            return  # a retransmission of a packet we already have and forwarded
        if self._budget is not None and not self._budget.allows(len(rtp.payload)):
            if self._budget.dropped == 1:
                logger.warning(
                    "%s sends over %d kbit/s on mid %s; dropping the excess",
                    self.peer_id,
                    self._max_bitrate // 1000,
                    self.mid,
                )
            return
        payload = rtp.payload
        level = rtp.extensions.audio_level
        packet = SourcePacket(
            self.history,
            rtp.sequence_number,
            rtp.timestamp,
            bool(rtp.marker),
            payload,
            self.codec.clockRate,
            keyframe=starts_keyframe(self.mime_type, payload),
            frame_start=starts_frame(self.mime_type, payload),
            audio_level=None if level is None else (level[0] << 7) | level[1],
            arrival=arrival,
        )
        self.history.add(packet)
        self.packets_received += 1
        self.octets_received += len(payload)
        if packet.frame_start:
            self.frames_received += 1
            if packet.keyframe and self.kind == "video":
                self.keyframes_received += 1
                self.keyframes.answered()
        for subscription in tuple(self._encoded):
            subscription.sink.push(packet)

    def subscriber_estimate(self) -> int | None:
        """The lowest recent subscriber REMB, bounded below by :data:`REMB_FLOOR`."""
        estimates = [
            estimate
            for subscription in self._encoded
            if (estimate := subscription.sink.estimate) is not None
        ]
        return max(REMB_FLOOR, min(estimates)) if estimates else None

    def _cap_estimate(self, own: int) -> int:
        """The REMB the publisher gets: our own estimate of its uplink, or less."""
        self._own_estimate = own
        return min(own, self._target_bitrate() or own)

    def _target_bitrate(self) -> int | None:
        """What the publisher should send at most: the subscribers' and our cap, if any."""
        return capped(self.subscriber_estimate(), self._max_bitrate)

    async def _relay_estimates(self) -> None:
        """Every second, tell the publisher the lowest subscriber estimate if it is lower."""
        while True:
            await asyncio.sleep(REMB_INTERVAL)
            target = self._target_bitrate()
            if target is not None and (self._own_estimate is None or target < self._own_estimate):
                assert self._send_remb is not None
                await self._send_remb(target)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe soon (coalesced across subscribers)."""
        if self.kind == "video" and not self.closed:
            self.keyframes.request()

    def subscribe_encoded(
        self, sink: EncodedSink, on_ended: Callable[[], None] | None = None
    ) -> EncodedSubscription:
        """Push every RTP packet to ``sink`` until the handle is closed."""
        subscription = EncodedSubscription(self, sink, on_ended)
        self._encoded.append(subscription)
        return subscription

    def subscribe_decoded(
        self, *, buffered: bool = False, on_ended: Callable[[], None] | None = None
    ) -> DecodedSubscription:
        """A relay proxy of the decoded track, until the handle is closed.

        Unbuffered proxies keep only the latest frame (a slow encoder skips
        frames); a buffered one keeps every frame, for a reader that is always quick.
        """
        if self._tap is not None and not self._tap.decoding:
            self._tap.decoding = True
            self.request_keyframe()  # the decoder starts mid-stream
        track = self._relay.subscribe(self.track, buffered=buffered)
        subscription = DecodedSubscription(self, track, on_ended)
        self._decoded.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if isinstance(subscription, EncodedSubscription):
            self._encoded.remove(subscription)
        elif isinstance(subscription, DecodedSubscription):
            self._decoded.remove(subscription)
            if self._tap is not None and not self._decoded:
                self._tap.decoding = False

    @property
    def subscriptions(self) -> int:
        return len(self._encoded) + len(self._decoded)

    async def close(self) -> None:
        """End the publication: every subscriber is told and lets go, the drain stops."""
        if self.closed:
            return
        self.closed = True
        self.keyframes.cancel()
        await cancel_and_wait(self._remb_task)
        for subscription in [*self._encoded, *self._decoded]:
            subscription.ended()
        await self._drain.stop()
        end_track_of_unstarted_receiver(self.receiver)  # or MediaRelay's reader waits forever

    def stats(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "codec": self.codec.mimeType,
            "packets": self.packets_received,
            "frames": self.frames_received,
            "keyframes": self.keyframes_received,
            **self.keyframes.stats(),
            "policed_packets": self._budget.dropped if self._budget else 0,
            "decoding": self._tap.decoding if self._tap else True,
            "subscriber_estimate": self.subscriber_estimate(),
        }

    def __repr__(self) -> str:
        return f"Publication({self.key}, {self.kind})"

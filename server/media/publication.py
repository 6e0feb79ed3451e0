"""A track one participant sends to the server, offered to everyone else in the room."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_hooks import negotiated_codecs, send_picture_loss, tap_encoded_frames
from .encoded import EncodedFrame, KeyframeRequests, is_keyframe
from .types import Kind

if TYPE_CHECKING:
    from av import VideoFrame
    from av.frame import Frame

logger = logging.getLogger(__name__)


class EncodedSink(Protocol):
    """Receives a publication's encoded frames (a forwarding slot)."""

    def push(self, frame: EncodedFrame) -> None: ...


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
    """Forwarded frames, pushed to ``sink`` as they arrive; nothing is decoded for it."""

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

    *Encoded*: with ``forward=True`` the receiver's reassembled frames are
    intercepted before its decoder and pushed to every encoded subscription;
    nothing is decoded or re-encoded for them.

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
    ) -> None:
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
        self._tap = tap_encoded_frames(receiver, self._on_encoded) if forward else None
        self._encoded: list[EncodedSubscription] = []
        self._decoded: list[DecodedSubscription] = []
        self.keyframes = KeyframeRequests(lambda: send_picture_loss(receiver))
        self.frames_received = 0
        self.keyframes_received = 0
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

    def _on_encoded(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        keyframe = is_keyframe(codec.mimeType, frame.data)
        self.frames_received += 1
        self.keyframes_received += keyframe
        encoded = EncodedFrame(frame.data, frame.timestamp, codec.clockRate, keyframe)
        for subscription in tuple(self._encoded):
            subscription.sink.push(encoded)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe soon (coalesced across subscribers)."""
        if self.kind == "video" and not self.closed:
            self.keyframes.request()

    def subscribe_encoded(
        self, sink: EncodedSink, on_ended: Callable[[], None] | None = None
    ) -> EncodedSubscription:
        """Push every encoded frame to ``sink`` until the handle is closed."""
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
        for subscription in [*self._encoded, *self._decoded]:
            subscription.ended()
        await self._drain.stop()

    def stats(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "codec": self.codec.mimeType,
            "frames": self.frames_received,
            "keyframes": self.keyframes_received,
            "keyframe_requests": self.keyframes.requested,
            "plis_sent": self.keyframes.sent,
            "decoding": self._tap.decoding if self._tap else True,
        }

    def __repr__(self) -> str:
        return f"Publication({self.key}, {self.kind})"

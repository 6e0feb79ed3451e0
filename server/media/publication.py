"""A track one participant sends to the server, offered to everyone else in the room."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol, cast

from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_hooks import negotiated_codecs, send_picture_loss, tap_encoded_frames
from .encoded import EncodedFrame, KeyframeRequests, is_keyframe

if TYPE_CHECKING:
    from av import VideoFrame
    from av.frame import Frame

    from .outbound import OutboundTrack

logger = logging.getLogger(__name__)


class EncodedSink(Protocol):
    """Receives a publication's encoded frames (a forwarding slot)."""

    def push(self, frame: EncodedFrame) -> None: ...


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
    intercepted before its decoder and pushed to every forwarding slot; nothing
    is decoded or re-encoded for them.

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
        self.kind: str = receiver.track.kind
        self.receiver = receiver
        self.codec: RTCRtpCodecParameters = negotiated_codecs(transceiver)[0]
        self.track: MediaStreamTrack = (
            ServerClockVideo(receiver.track) if self.kind == "video" else receiver.track
        )
        self._relay = relay
        self._drain = MediaBlackhole()
        self._drain.addTrack(relay.subscribe(self.track, buffered=False))
        self._tap = tap_encoded_frames(receiver, self._on_encoded) if forward else None
        self._decoded_users = 0
        self.subscribers: set[OutboundTrack] = set()
        self.forwarders: set[EncodedSink] = set()
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
        for sink in tuple(self.forwarders):
            sink.push(encoded)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe soon (coalesced across subscribers)."""
        if self.kind == "video" and not self.closed:
            self.keyframes.request()

    def decoded(self, *, buffered: bool = False) -> MediaStreamTrack:
        """A relay proxy of the decoded track; pair with ``release_decoded``.

        Unbuffered proxies keep only the latest frame (a slow encoder skips
        frames); a buffered one keeps every frame, for a reader that is always quick.
        """
        self._decoded_users += 1
        if self._tap is not None and not self._tap.decoding:
            self._tap.decoding = True
            self.request_keyframe()  # the decoder starts mid-stream
        return self._relay.subscribe(self.track, buffered=buffered)

    def release_decoded(self) -> None:
        self._decoded_users -= 1
        if self._tap is not None and self._decoded_users <= 0:
            self._tap.decoding = False

    async def close(self) -> None:
        """End the publication: every subscriber lets go of it, the drain stops."""
        if self.closed:
            return
        self.closed = True
        self.keyframes.cancel()
        for subscriber in list(self.subscribers):
            subscriber.detach()
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

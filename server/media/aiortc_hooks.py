"""Every use of aiortc's private names, in one place, checked at startup.

aiortc has no public hook for what an SFU needs (per-packet audio levels,
encoded frames, keyframe requests, codec order), so we attach to a few private
names. The aiortc version is pinned in setup.cfg; :func:`check_aiortc_internals`
fails fast, with a clear message, if an upgrade moved any of them, and the test
suite exercises each one.
"""

from __future__ import annotations

import inspect
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiortc
import aiortc.clock
from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

SUPPORTED_AIORTC = "1.16"
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"

EncodedFrameHandler = Callable[[RTCRtpCodecParameters, JitterFrame], None]


class AiortcInternalsChanged(RuntimeError):
    """The installed aiortc lacks an internal this server relies on."""


class EncodedFrameTap(queue.Queue):
    """Stands in for a receiver's decoder queue: sees every reassembled encoded frame.

    aiortc's receiver puts ``(codec, JitterFrame)`` here from the event loop; the
    decoder thread gets it only while :attr:`decoding` is on. The ``None``
    sentinel that stops the decoder thread always goes through.
    """

    def __init__(self, on_frame: EncodedFrameHandler) -> None:
        super().__init__()
        self._on_frame = on_frame
        self.decoding = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            self._on_frame(*item)
            if not self.decoding:
                return
        super().put(item, block, timeout)


def tap_encoded_frames(receiver: RTCRtpReceiver, on_frame: EncodedFrameHandler) -> EncodedFrameTap:
    """Intercept a receiver's encoded frames; must run before the receiver starts."""
    tap = EncodedFrameTap(on_frame)
    setattr(receiver, _DECODER_QUEUE, tap)
    return tap


def observe_audio_levels(receiver: RTCRtpReceiver, callback: Callable[[int], None]) -> None:
    """Call ``callback(level_dbov)`` for each received packet carrying ``ssrc-audio-level``."""
    handle_rtp = receiver._handle_rtp_packet

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        level = packet.extensions.audio_level
        if level is not None:
            callback(level[1])
        await handle_rtp(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


async def send_picture_loss(receiver: RTCRtpReceiver) -> None:
    """Ask the publisher for a keyframe (RTCP PLI on every SSRC it sends, RTX included)."""
    for source in receiver.getSynchronizationSources():
        await receiver._send_rtcp_pli(source.source)


def route_keyframe_requests(sender: RTCRtpSender, handler: Callable[[], None]) -> None:
    """Send the subscriber's PLI/FIR to ``handler`` instead of the sender's own encoder."""
    sender._send_keyframe = handler  # type: ignore[method-assign]


def force_encoder_keyframe(sender: RTCRtpSender) -> None:
    """Make the sender's own encoder emit a keyframe next (when it encodes frames)."""
    RTCRtpSender._send_keyframe(sender)


def set_stream_id(transceiver: RTCRtpTransceiver, stream_id: str) -> None:
    """The MediaStream id (``a=msid``) the next answer announces for this sender."""
    transceiver.sender._stream_id = stream_id


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """Codecs agreed for an m-line; a sender uses the first one for its whole life."""
    return list(transceiver._codecs)


def prefer_codecs(transceiver: RTCRtpTransceiver, mime_order: Sequence[str]) -> None:
    """Reorder an m-line's agreed codecs (after setRemoteDescription, before the answer).

    Our answer lists them in this order, so the browser sends with the first one,
    and our sender for this m-line will use the first one too.
    """
    rank: dict[str, int] = {}
    for index, mime in enumerate(mime_order):
        rank.setdefault(mime.lower(), index)
    codecs = list(transceiver._codecs)
    primaries = [c for c in codecs if not c.mimeType.lower().endswith("/rtx")]
    primaries.sort(key=lambda c: rank.get(c.mimeType.lower(), len(rank)))
    ordered = []
    for codec in primaries:
        ordered.append(codec)
        ordered.extend(
            c
            for c in codecs
            if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == codec.payloadType
        )
    transceiver._codecs = ordered


NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def _current_ntp_time() -> int:
    now = time.time()
    seconds = int(now)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | int((now - seconds) * 2**32)


def _current_ms() -> int:
    return int((time.time() + NTP_UNIX_OFFSET) * 1000)


def use_fast_clock() -> None:
    """Replace aiortc's NTP clock helpers with equivalents that skip ``datetime``.

    aiortc reads the NTP clock twice for every RTP packet it sends and once per
    packet it receives, through timezone-aware datetimes; that was ~6% of the
    relay's CPU when forwarding. Same clock (``time.time``), same values.
    """
    aiortc.clock.current_ntp_time = _current_ntp_time
    aiortc.clock.current_ms = _current_ms


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise AiortcInternalsChanged(
            f"aiortc {aiortc.__version__} no longer provides {what}; roomrelay supports "
            f"aiortc {SUPPORTED_AIORTC}.x (pip install 'aiortc>={SUPPORTED_AIORTC},<1.17')"
        )


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def _assigns(cls: type, attribute: str) -> bool:
    """Whether ``cls.__init__`` sets ``self.<attribute>`` (no instance needed)."""
    return f"self.{attribute} =" in inspect.getsource(cls.__init__) or (
        f"self.{attribute}:" in inspect.getsource(cls.__init__)
    )


def check_aiortc_internals() -> None:
    """Raise :class:`AiortcInternalsChanged` unless every private name we use is present."""
    _require(
        _parameters(RTCRtpReceiver._handle_rtp_packet) == ["self", "packet", "arrival_time_ms"],
        "RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)",
    )
    _require(
        _parameters(RTCRtpReceiver._send_rtcp_pli) == ["self", "media_ssrc"],
        "RTCRtpReceiver._send_rtcp_pli(media_ssrc)",
    )
    _require(_parameters(RTCRtpSender._send_keyframe) == ["self"], "RTCRtpSender._send_keyframe()")
    _require(hasattr(RtpPacket().extensions, "audio_level"), "RtpPacket.extensions.audio_level")
    _require(
        _parameters(JitterFrame.__init__) == ["self", "data", "timestamp"],
        "JitterFrame(data, timestamp)",
    )
    _require(
        "put(" in inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
        and "decoder_queue" in inspect.getsource(RTCRtpReceiver._handle_rtp_packet),
        "RTCRtpReceiver._handle_rtp_packet feeding the decoder queue",
    )
    _require(_assigns(RTCRtpReceiver, "__decoder_queue"), "RTCRtpReceiver.__decoder_queue")
    _require(_assigns(RTCRtpSender, "_stream_id"), "RTCRtpSender._stream_id")
    _require(_assigns(RTCRtpTransceiver, "_codecs"), "RTCRtpTransceiver._codecs")
    _require(
        all(hasattr(aiortc.clock, name) for name in ("current_ntp_time", "current_ms")),
        "aiortc.clock.current_ntp_time / current_ms",
    )

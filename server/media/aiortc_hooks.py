"""Every use of aiortc's private names, in one place, checked at startup.

aiortc has no public hook for what an SFU needs (per-packet audio levels,
encoded frames, keyframe requests), so we attach to a few private methods. The
aiortc version is pinned in setup.cfg; :func:`check_aiortc_internals` fails
fast, with a clear message, if an upgrade moved any of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket

SUPPORTED_AIORTC = "1.16"


class AiortcInternalsChanged(RuntimeError):
    """The installed aiortc lacks an internal this server relies on."""


def observe_audio_levels(receiver: RTCRtpReceiver, callback: Callable[[int], None]) -> None:
    """Call ``callback(level_dbov)`` for each received packet carrying ``ssrc-audio-level``."""
    handle_rtp = receiver._handle_rtp_packet

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        level = packet.extensions.audio_level
        if level is not None:
            callback(level[1])
        await handle_rtp(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


def set_stream_id(transceiver: aiortc.RTCRtpTransceiver, stream_id: str) -> None:
    """The MediaStream id (``a=msid``) the next answer announces for this sender."""
    transceiver.sender._stream_id = stream_id


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise AiortcInternalsChanged(
            f"aiortc {aiortc.__version__} no longer provides {what}; roomrelay supports "
            f"aiortc {SUPPORTED_AIORTC}.x (pip install 'aiortc>={SUPPORTED_AIORTC},<1.17')"
        )


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def check_aiortc_internals() -> None:
    """Raise :class:`AiortcInternalsChanged` unless every private name we use is present."""
    _require(
        _parameters(RTCRtpReceiver._handle_rtp_packet) == ["self", "packet", "arrival_time_ms"],
        "RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)",
    )
    _require(
        hasattr(RtpPacket().extensions, "audio_level"),
        "RtpPacket.extensions.audio_level",
    )
    _require(
        "_stream_id" in inspect.getsource(aiortc.RTCRtpSender.__init__),
        "RTCRtpSender._stream_id",
    )

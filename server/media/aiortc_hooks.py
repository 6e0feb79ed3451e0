"""Every use of aiortc's private names and every process-wide patch, in one place.

aiortc has no public hook for what an SFU needs (RTP packets before the jitter
buffer, sending packets and answering NACKs around a sender, REMB in and out,
per-packet audio levels, a gate on the decoder, keyframe requests, codec order,
SDP parsing), so we attach to a few private names. The aiortc version is pinned in setup.cfg;
:func:`check_aiortc_internals` fails fast, with a clear message, if an upgrade
moved any of them, and the test suite exercises each one. Nothing outside this
module touches aiortc's private names.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import queue
import random
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aioice
import aiortc
import aiortc.clock
from aioice import stun
from aiortc import RTCIceCandidate, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import CODECS
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)
from aiortc.sdp import MediaDescription, SessionDescription, candidate_from_sdp

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = "1.16"
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"
_RTCP_SSRC = "_RTCRtpReceiver__rtcp_ssrc"
_STARTED = "_RTCRtpReceiver__started"
_DTLS_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_DTLS_TX_PACKETS = "_RTCDtlsTransport__tx_packets"

EncodedFrameHandler = Callable[[RTCRtpCodecParameters, JitterFrame], None]


class AiortcInternalsChanged(RuntimeError):
    """The installed aiortc lacks an internal this server relies on."""


class EncodedFrameTap(queue.Queue):
    """Stands in for a receiver's decoder queue: sees every reassembled encoded frame.

    aiortc's receiver puts ``(codec, JitterFrame)`` here from the event loop; the
    decoder thread gets it only while :attr:`decoding` is on. The ``None``
    sentinel that stops the decoder thread always goes through.
    """

    def __init__(self, on_frame: EncodedFrameHandler | None = None) -> None:
        super().__init__()
        self._on_frame = on_frame
        self.decoding = False

    def rearm(self, on_frame: EncodedFrameHandler | None) -> None:
        """Serve a new publication of the same receiver: new handler, decoder gated again."""
        self._on_frame = on_frame
        self.decoding = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            if self._on_frame is not None:
                self._on_frame(*item)
            if not self.decoding:
                return
        super().put(item, block, timeout)


def tap_encoded_frames(
    receiver: RTCRtpReceiver, on_frame: EncodedFrameHandler | None = None
) -> EncodedFrameTap | None:
    """Intercept a receiver's encoded frames (and gate its decoder), or None if too late.

    A receiver's decoder thread reads the queue it was started with: swapping in a
    new one afterwards would strand the thread's stop sentinel and hang
    ``RTCPeerConnection.close()`` on its ``join()``. A receiver whose m-line is
    published again (a second screen share) keeps its first tap, re-armed.
    """
    current = getattr(receiver, _DECODER_QUEUE)
    if isinstance(current, EncodedFrameTap):
        current.rearm(on_frame)
        return current
    if getattr(receiver, _DECODER_THREAD) is not None:
        return None  # started untapped: the publication falls back to decoding
    tap = EncodedFrameTap(on_frame)
    setattr(receiver, _DECODER_QUEUE, tap)
    return tap


__all__ = ["MediaDescription"]  # aiortc's parsed m-line, for offer.py's type hints


# Offers parsed by parse_sdp() and not yet applied, by their text: setRemoteDescription
# takes its parse from here instead of parsing the same text a second time.
_PARSED_OFFERS: OrderedDict[str, SessionDescription] = OrderedDict()
MAX_PARSED_OFFERS = 32  # bounded: an offer refused after parsing is simply forgotten
_parse_description = SessionDescription.parse


def parse_sdp(sdp: str) -> SessionDescription:
    """aiortc's own SDP parser; with the hooks installed, aiortc reuses this parse once.

    Safe from any thread (offers are parsed off the event loop).
    """
    parsed = _parse_description(sdp)
    if _installed:
        _PARSED_OFFERS[sdp] = parsed
        while len(_PARSED_OFFERS) > MAX_PARSED_OFFERS:
            _PARSED_OFFERS.popitem(last=False)
    return parsed


def _parse_once(cls: type[SessionDescription], sdp: str) -> SessionDescription:
    parsed = _PARSED_OFFERS.pop(sdp, None)
    return parsed if parsed is not None else _parse_description(sdp)


def _reuse_parsed_offers() -> None:
    SessionDescription.parse = classmethod(_parse_once)  # type: ignore[method-assign, assignment]


def parse_candidate_line(line: str) -> RTCIceCandidate:
    """An ICE candidate from its SDP form (without the ``candidate:`` prefix)."""
    return candidate_from_sdp(line)


def supported_codecs(kind: str) -> list[RTCRtpCodecParameters]:
    """The codecs aiortc can send and receive for ``kind`` (empty for unknown kinds)."""
    return list(CODECS.get(kind, []))


def common_codecs(kind: str, offered: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """The offered codecs aiortc shares, as ``setRemoteDescription`` will agree them."""
    return find_common_codecs(supported_codecs(kind), offered)


def observe_audio_levels(receiver: RTCRtpReceiver, callback: Callable[[int], None]) -> None:
    """Call ``callback(level_dbov)`` for each received packet carrying ``ssrc-audio-level``."""
    handle_rtp = receiver._handle_rtp_packet

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        level = packet.extensions.audio_level
        if level is not None:
            callback(level[1])
        await handle_rtp(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


async def send_keyframe_request(receiver: RTCRtpReceiver, fir_sequence: int | None) -> None:
    """Ask the publisher for a keyframe on every SSRC it sends: a PLI, or a FIR (RFC 5104).

    ``fir_sequence`` (0-255) numbers a FIR; a new request takes the next number.
    """
    for source in receiver.getSynchronizationSources():
        if fir_sequence is None:
            await receiver._send_rtcp_pli(source.source)
            continue
        own_ssrc = getattr(receiver, _RTCP_SSRC)
        if own_ssrc is not None:
            fci = struct.pack("!LB3x", source.source, fir_sequence)
            # RFC 5104 puts the target only in the FCI (media SSRC 0), but aiortc and
            # other stacks route feedback by media SSRC: name it in both places.
            packet = RtcpPsfbPacket(RTCP_PSFB_FIR, own_ssrc, source.source, fci)
            await receiver._send_rtcp(packet)


def route_keyframe_requests(sender: RTCRtpSender, handler: Callable[[], None]) -> None:
    """Send the subscriber's PLI/FIR to ``handler`` instead of the sender's own encoder."""
    sender._send_keyframe = handler  # type: ignore[method-assign]


def force_encoder_keyframe(sender: RTCRtpSender) -> None:
    """Make the sender's own encoder emit a keyframe next (when it encodes frames)."""
    RTCRtpSender._send_keyframe(sender)


def answer_as_dtls_server(pc: aiortc.RTCPeerConnection) -> None:
    """Make the coming answer say ``a=setup:passive`` for transports not yet negotiated.

    aiortc answers ``active`` by default, and as a DTLS client it offers ECDSA
    cipher suites only: a publisher whose DTLS certificate is RSA (GStreamer's
    webrtcbin, hence simple-whip-client) then fails with "no shared cipher". As the
    DTLS server, our ECDSA certificate picks the suite, which every client accepts.
    """
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for transport in transports:
        if transport._role == "auto":
            transport._set_role("server")


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


_SENDER = "_RTCRtpSender__"  # prefix of RTCRtpSender's name-mangled attributes
_RECEIVER = "_RTCRtpReceiver__"
_EXTENSION_IDS = "_HeaderExtensionsMap__ids"

EncodedFrameSource = Callable[[RTCRtpCodecParameters], Awaitable[None]]


def _sender_private(sender: RTCRtpSender, name: str) -> Any:
    return getattr(sender, _SENDER + name)


def _set_sender_private(sender: RTCRtpSender, name: str, value: Any) -> None:
    setattr(sender, _SENDER + name, value)


def intercept_rtp(
    receiver: RTCRtpReceiver,
    on_packet: Callable[[RtpPacket], None],
    rtx_payload_types: dict[int, int],
) -> None:
    """Hand each received RTP packet to ``on_packet`` first, before aiortc's jitter buffer.

    Retransmissions (RTX, payload type in ``rtx_payload_types`` mapping to the
    original payload type) are unwrapped first. aiortc still gets every packet
    afterwards: its NACK generator, bandwidth estimator, receiver reports and
    (when someone decodes) jitter buffer keep working.
    """
    handle_rtp = receiver._handle_rtp_packet
    media_ssrc = 0

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        nonlocal media_ssrc
        apt = rtx_payload_types.get(packet.payload_type)
        if apt is None:
            media_ssrc = packet.ssrc
            on_packet(packet)
        elif len(packet.payload) >= 2 and media_ssrc:
            on_packet(unwrap_rtx(packet, payload_type=apt, ssrc=media_ssrc))
        await handle_rtp(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


def end_track_of_unstarted_receiver(receiver: RTCRtpReceiver) -> None:
    """End the remote track of a receiver whose connection never came up.

    A started receiver ends its track when it stops (its decoder thread queues
    the end); one that never started never does, so whatever reads the track
    (``MediaRelay``'s task) would wait forever.
    """
    track = receiver.track
    if not getattr(receiver, _STARTED) and isinstance(track, RemoteStreamTrack):
        track._queue.put_nowait(None)


def limit_rtp_sources(
    transport: RTCDtlsTransport, limit: int, refused: Callable[[int], None]
) -> None:
    """Drop RTP from SSRCs beyond the first ``limit`` a connection used (idempotent).

    aiortc learns every new SSRC it can route and reports on each one in its
    receiver reports; past 31 the report no longer fits (RTCP's 5-bit count,
    then libsrtp's buffer), the report task dies and ``RTCPeerConnection.close()``
    then waits for it forever. ``refused(ssrc)`` hears of each dropped packet.
    """
    router = transport._rtp_router
    if getattr(router, "_roomrelay_limited", False):
        return
    route_rtp = router.route_rtp

    def route_known_sources(packet: RtpPacket) -> Any:
        if packet.ssrc not in router.ssrc_table and len(router.ssrc_table) >= limit:
            refused(packet.ssrc)
            return None
        return route_rtp(packet)

    router.route_rtp = route_known_sources  # type: ignore[method-assign]
    router._roomrelay_limited = True  # type: ignore[attr-defined]


def relay_remb(
    receiver: RTCRtpReceiver, cap: Callable[[int], int]
) -> Callable[[int], Awaitable[None]]:
    """Pass each REMB the receiver sends its publisher through ``cap(own_estimate)``.

    Returns a function that sends the publisher a REMB of our own (uncapped),
    for every SSRC it sends.
    """
    send_rtcp = receiver._send_rtcp

    async def send_capped(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                packet.fci = pack_remb_fci(cap(bitrate), ssrcs)
        await send_rtcp(packet)

    async def send_remb(bitrate: int) -> None:
        rtcp_ssrc = getattr(receiver, _RECEIVER + "rtcp_ssrc")
        ssrcs = [source.source for source in receiver.getSynchronizationSources()]
        if rtcp_ssrc is not None and ssrcs:
            fci = pack_remb_fci(bitrate, ssrcs)
            await send_rtcp(
                RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=fci)
            )

    receiver._send_rtcp = send_capped  # type: ignore[method-assign]
    return send_remb


def observe_remb(sender: RTCRtpSender, callback: Callable[[int], None]) -> None:
    """Call ``callback(bitrate)`` for each REMB the subscriber sends about this sender."""
    handle_rtcp = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):
                callback(unpack_remb_fci(packet.fci)[0])
        await handle_rtcp(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def route_retransmissions(sender: RTCRtpSender, handler: Callable[[int], Awaitable[None]]) -> None:
    """Answer the subscriber's NACKs (one call per lost sequence number) with ``handler``."""
    sender._retransmit = handler  # type: ignore[method-assign, assignment]


@dataclass(frozen=True)
class SenderIdentity:
    """What a forwarding sender's packets must carry, known once the sender has started."""

    ssrc: int
    rtx_ssrc: int
    mid: str | None
    extension_ids: dict[str, int]  # "mid", "abs_send_time", "audio_level" as negotiated


def sender_identity(sender: RTCRtpSender) -> SenderIdentity:
    ids = getattr(_sender_private(sender, "rtp_header_extensions_map"), _EXTENSION_IDS)
    extension_ids = {
        name: getattr(ids, name)
        for name in ("mid", "abs_send_time", "audio_level")
        if getattr(ids, name)
    }
    return SenderIdentity(
        sender._ssrc, sender._rtx_ssrc, _sender_private(sender, "mid"), extension_ids
    )


class DirectRtpSend:
    """SRTP-protect and send serialized RTP on a sender's transport, without awaiting.

    aiortc's send path (``RTCDtlsTransport._send_rtp``, then the ICE transport,
    aioice's connection and its protocol) is four coroutines per packet, none of
    which ever suspends: asyncio's datagram transports buffer instead of blocking,
    and a TURN transport's ``sendto`` schedules its own send. This does the same
    work, protect then ``sendto`` on the nominated pair, as one plain call, which
    is most of a forwarded packet's cost beside the syscall itself.
    """

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._dtls: RTCDtlsTransport | None = None
        self._nominated: dict[int, Any] = {}  # aioice's component -> nominated pair
        self._pair: Any = None
        self._address: tuple[str, int] | None = None

    def __call__(self, data: bytes) -> None:
        """Send one packet; ``ConnectionError`` when the transport is not (or no longer) up."""
        dtls = self._sender.transport
        if dtls is not self._dtls:  # the first packet (or a sender moved to another transport)
            self._dtls, self._nominated = dtls, dtls.transport._connection._nominated
        pair = self._nominated.get(1)
        if dtls._state is not DtlsState.CONNECTED or pair is None:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        if pair is not self._pair:  # the first packet, or ICE picked another pair
            self._pair, self._address = pair, pair.remote_addr
        protected = dtls._tx_srtp.protect(data)
        pair.protocol.transport.sendto(protected, self._address)
        setattr(dtls, _DTLS_TX_BYTES, getattr(dtls, _DTLS_TX_BYTES) + len(protected))
        setattr(dtls, _DTLS_TX_PACKETS, getattr(dtls, _DTLS_TX_PACKETS) + 1)


_SENDER_NTP_TIMESTAMP = _SENDER + "ntp_timestamp"
_SENDER_RTP_TIMESTAMP = _SENDER + "rtp_timestamp"
_SENDER_OCTET_COUNT = _SENDER + "octet_count"
_SENDER_PACKET_COUNT = _SENDER + "packet_count"


def count_sent(sender: RTCRtpSender, packets: int, octets: int, rtp_timestamp: int) -> None:
    """Account packets sent around the sender, for its RTCP sender reports and getStats()."""
    setattr(sender, _SENDER_NTP_TIMESTAMP, aiortc.clock.current_ntp_time())
    setattr(sender, _SENDER_RTP_TIMESTAMP, rtp_timestamp)
    setattr(sender, _SENDER_OCTET_COUNT, getattr(sender, _SENDER_OCTET_COUNT) + octets)
    setattr(sender, _SENDER_PACKET_COUNT, getattr(sender, _SENDER_PACKET_COUNT) + packets)


def current_abs_send_time() -> int:
    """The abs-send-time extension's value for now (6.18 fixed-point seconds)."""
    return (aiortc.clock.current_ntp_time() >> 14) & 0x00FFFFFF


async def next_encoded_frame(
    sender: RTCRtpSender, codec: RTCRtpCodecParameters
) -> RTCEncodedFrame | None:
    """The sender's next frame from its track, encoded by the sender's own encoder."""
    return await sender._next_encoded_frame(codec)


async def _run_with(
    sender: RTCRtpSender, run: EncodedFrameSource, codec: RTCRtpCodecParameters
) -> None:
    """aiortc's ``_run_rtp`` bookkeeping around ``run(codec)``, which does the sending."""
    _sender_private(sender, "rtp_started").set()
    try:
        await run(codec)
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        logger.exception("a forwarding sender failed")
    track = _sender_private(sender, "track")
    if track:
        track.stop()
        _set_sender_private(sender, "track", None)
    _set_sender_private(sender, "encoder", None)
    _sender_private(sender, "rtp_exited").set()


def replace_rtp_loop(sender: RTCRtpSender, run: EncodedFrameSource) -> None:
    """Run ``run(codec)`` as the sender's RTP task; call before the sender starts."""
    sender._run_rtp = functools.partial(_run_with, sender, run)  # type: ignore[method-assign]


NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def _current_ntp_time() -> int:
    now = time.time()
    seconds = int(now)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | int((now - seconds) * 2**32)


def _current_ms() -> int:
    return int((time.time() + NTP_UNIX_OFFSET) * 1000)


def _use_fast_clock() -> None:
    """Replace aiortc's NTP clock helpers with equivalents that skip ``datetime``.

    aiortc reads the NTP clock twice for every RTP packet it sends and once per
    packet it receives, through timezone-aware datetimes; that was ~6% of the
    relay's CPU when forwarding. Same clock (``time.time``), same values.
    """
    aiortc.clock.current_ntp_time = _current_ntp_time
    aiortc.clock.current_ms = _current_ms


_installed = False


def install_aiortc_hooks() -> None:
    """Check aiortc's internals and apply the process-wide patches, once per process."""
    global _installed  # noqa: PLW0603 - one process, one aiortc: patched once
    if _installed:
        return
    check_aiortc_internals()
    check_aioice_internals()
    _use_fast_clock()
    _use_patient_consent()
    _reuse_parsed_offers()
    _installed = True


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise AiortcInternalsChanged(
            f"aiortc {aiortc.__version__} no longer provides {what}; roomrelay supports "
            f"aiortc {SUPPORTED_AIORTC}.x (pip install 'aiortc>={SUPPORTED_AIORTC},<1.17')"
        )


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@functools.cache
def _source(obj: Any) -> str:
    """Source text of a class or function (read once: tokenizing aiortc takes a while)."""
    return inspect.getsource(obj)


def _assigns(cls: type, attribute: str) -> bool:
    """Whether ``cls`` sets ``self.<attribute>`` somewhere (no instance needed)."""
    source = _source(cls)
    return f"self.{attribute} =" in source or f"self.{attribute}:" in source


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
    _require(
        _parameters(RTCDtlsTransport._set_role) == ["self", "role"]
        and '"auto"' in _source(RTCDtlsTransport.__init__),
        "RTCDtlsTransport._set_role(role) and its initial 'auto' _role",
    )
    _require(hasattr(RtpPacket().extensions, "audio_level"), "RtpPacket.extensions.audio_level")
    _require(
        _parameters(JitterFrame.__init__) == ["self", "data", "timestamp"],
        "JitterFrame(data, timestamp)",
    )
    _require(
        "put(" in _source(RTCRtpReceiver._handle_rtp_packet)
        and "decoder_queue" in _source(RTCRtpReceiver._handle_rtp_packet),
        "RTCRtpReceiver._handle_rtp_packet feeding the decoder queue",
    )
    _require(_assigns(RTCRtpReceiver, "__decoder_queue"), "RTCRtpReceiver.__decoder_queue")
    _require(_assigns(RTCRtpReceiver, "__decoder_thread"), "RTCRtpReceiver.__decoder_thread")
    _require(_assigns(RTCRtpReceiver, "__rtcp_ssrc"), "RTCRtpReceiver.__rtcp_ssrc")
    _require(_assigns(RTCDtlsTransport, "_rtp_router"), "RTCDtlsTransport._rtp_router")
    _require(_assigns(RTCRtpReceiver, "__started"), "RTCRtpReceiver.__started")
    _require(
        "SessionDescription.parse(sessionDescription.sdp)"
        in _source(aiortc.RTCPeerConnection.setRemoteDescription),
        "RTCPeerConnection.setRemoteDescription parsing with sdp.SessionDescription.parse",
    )
    _require(_assigns(RemoteStreamTrack, "_queue"), "RemoteStreamTrack._queue")
    _require(
        "route_rtp(" in _source(RTCDtlsTransport._handle_rtp_data)
        and _assigns(RtpRouter, "ssrc_table"),
        "RTCDtlsTransport routing RTP through RtpRouter.route_rtp / ssrc_table",
    )
    _require(
        _parameters(RTCRtpReceiver._send_rtcp) == ["self", "packet"],
        "RTCRtpReceiver._send_rtcp(packet)",
    )
    _require(_assigns(RTCRtpSender, "_stream_id"), "RTCRtpSender._stream_id")
    _require(_assigns(RTCRtpTransceiver, "_codecs"), "RTCRtpTransceiver._codecs")
    _require(
        all(hasattr(aiortc.clock, name) for name in ("current_ntp_time", "current_ms")),
        "aiortc.clock.current_ntp_time / current_ms",
    )
    for name in (
        "rtp_started", "rtp_exited", "track", "mid", "encoder",
        "rtp_header_extensions_map", "ntp_timestamp", "rtp_timestamp", "octet_count",
        "packet_count",
    ):  # fmt: skip
        _require(_assigns(RTCRtpSender, "__" + name), f"RTCRtpSender.__{name}")
    _require(_assigns(RTCRtpSender, "_ssrc"), "RTCRtpSender._ssrc")
    _require(_assigns(RTCRtpSender, "_rtx_ssrc"), "RTCRtpSender._rtx_ssrc")
    _require(
        hasattr(HeaderExtensionsMap(), _EXTENSION_IDS)
        and all(
            hasattr(getattr(HeaderExtensionsMap(), _EXTENSION_IDS), name)
            for name in ("mid", "abs_send_time", "audio_level")
        ),
        "HeaderExtensionsMap.__ids (mid, abs_send_time, audio_level)",
    )
    _require(
        _parameters(RTCRtpSender._retransmit) == ["self", "sequence_number"],
        "RTCRtpSender._retransmit(sequence_number)",
    )
    _require(
        _parameters(RTCRtpSender._handle_rtcp_packet) == ["self", "packet"]
        and _parameters(RTCRtpReceiver._send_rtcp) == ["self", "packet"],
        "RTCRtpSender._handle_rtcp_packet(packet) and RTCRtpReceiver._send_rtcp(packet)",
    )
    _require(
        _parameters(RTCDtlsTransport._send_rtp) == ["self", "data"], "RTCDtlsTransport._send_rtp"
    )
    _require(
        all(
            _assigns(RTCDtlsTransport, name)
            for name in ("_state", "_tx_srtp", "__tx_bytes", "__tx_packets")
        )
        and hasattr(DtlsState, "CONNECTED")
        and "self._tx_srtp.protect(data)" in _source(RTCDtlsTransport._send_rtp)
        and "self._connection.send" in _source(aiortc.RTCIceTransport)
        and "active_pair.protocol.send_data(data, active_pair.remote_addr)"
        in _source(aioice.Connection.sendto)
        and "self.transport.sendto(data, addr)" in _source(aioice.ice.StunProtocol.send_data),
        "aiortc's RTP send path: RTCDtlsTransport._send_rtp (_state, _tx_srtp, __tx_bytes,"
        " __tx_packets) → RTCIceTransport._connection → aioice's nominated pair's"
        " protocol.transport.sendto",
    )
    _require(
        _parameters(SessionDescription.parse) == ["sdp"]
        and _parameters(candidate_from_sdp) == ["sdp"]
        and _parameters(find_common_codecs) == ["local_codecs", "remote_codecs"],
        "aiortc.sdp.SessionDescription.parse, candidate_from_sdp and find_common_codecs",
    )
    _require(
        _parameters(RTCRtpSender._next_encoded_frame) == ["self", "codec"]
        and _parameters(RTCRtpSender._run_rtp) == ["self", "codec"],
        "RTCRtpSender._next_encoded_frame(codec) and _run_rtp(codec)",
    )


# -- ICE consent freshness (aioice, under aiortc) ------------------------------------------

CONSENT_EXPIRY = 30.0  # RFC 7675: consent lapses 30 s after the last answered check
CONSENT_INTERVAL = 5.0  # seconds between checks, randomized by +-20% as the RFC asks
CONSENT_RETRANSMISSIONS = 2  # resent after 0.5 s and 1.5 s: an answer up to 3.5 s late counts


async def _query_consent_patiently(connection: aioice.Connection) -> None:
    """aioice's consent check loop, with RFC 7675's 30 s rule and retransmissions.

    aioice gives each check one try and 0.5 s, and drops the connection after six
    failed checks in a row; on a busy machine every answer can take longer than
    that, and calls dropped every 35-40 s. Here each check is retransmitted, and
    consent expires only when nothing was answered for ``CONSENT_EXPIRY`` seconds.
    """
    assert connection.remote_password is not None
    integrity_key = connection.remote_password.encode("utf8")
    last_answer = time.monotonic()
    while True:
        await asyncio.sleep(CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
        for pair in list(connection._nominated.values()):
            request = connection.build_request(pair, nominate=False)
            try:
                await pair.protocol.request(
                    request,
                    pair.remote_addr,
                    integrity_key=integrity_key,
                    retransmissions=CONSENT_RETRANSMISSIONS,
                )
                last_answer = time.monotonic()
            except stun.TransactionError:
                pass
        silent = time.monotonic() - last_answer
        if silent > CONSENT_EXPIRY:
            logger.info("ICE consent expired: no answer for %.0f s", silent)
            connection._query_consent_task = None
            await connection.close()
            return


def _use_patient_consent() -> None:
    aioice.Connection.query_consent = _query_consent_patiently  # type: ignore[method-assign,assignment]


def check_aioice_internals() -> None:
    """Raise :class:`AiortcInternalsChanged` unless aioice's consent loop looks as we expect."""
    _require(
        _parameters(aioice.Connection.query_consent) == ["self"]
        and "query_consent()" in _source(aioice.Connection.connect),
        "aioice.Connection.query_consent() started by connect()",
    )
    _require(
        _parameters(aioice.Connection.build_request) == ["self", "pair", "nominate"]
        and "retransmissions" in _parameters(aioice.ice.StunProtocol.request),
        "aioice.Connection.build_request(pair, nominate) and StunProtocol.request(...)",
    )
    for name in ("_nominated", "_query_consent_task", "remote_password"):
        _require(_assigns(aioice.Connection, name), f"aioice.Connection.{name}")

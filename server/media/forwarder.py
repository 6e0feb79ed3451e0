"""Sends one slot's RTP stream: packets from whichever source, rewritten, queued, sent.

Packets are pushed from the publisher's receive path as they arrive (no jitter
buffer, no reassembly) and queued; once per turn of the event loop the slot
SRTP-protects and sends what is queued, in one plain call per packet (no task,
no awaits: see :class:`~.aiortc_hooks.DirectRtpSend`). When that backlog
overflows, or its video falls a quarter second behind (the loop stalled), the
slot stops taking packets until the next keyframe (a partial picture would only
smear); audio is only ever dropped on overflow, so it goes on under load. NACKs
are answered from the source's packet history, RTX-wrapped when the subscriber
negotiated RTX.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar
from weakref import WeakKeyDictionary

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .aiortc_hooks import (
    DirectRtpSend,
    count_sent,
    current_abs_send_time,
    observe_remb,
    route_retransmissions,
    sender_identity,
)
from .latency import LatencyHistogram
from .rtp_rewrite import ExtensionWriter, Rewritten, SourcePacket, StreamRewriter, rtp_bytes

logger = logging.getLogger(__name__)

# Packets a slot may have waiting to be sent before it drops and waits for a keyframe.
MAX_BACKLOG = {"video": 256, "audio": 50}
# Seconds video may wait in a slot's backlog (a slow subscriber, or a server that cannot
# keep up) before the slot sheds video until the next keyframe. Audio is never shed this
# way: under load it keeps flowing while the video of whoever is behind thins out.
MAX_VIDEO_DELAY = 0.25
KEYFRAME_REASK = 0.5  # seconds: how often a held slot repeats its keyframe request
ESTIMATE_TTL = 5.0  # seconds a subscriber's REMB counts for
COUNT_EVERY = 0.1  # seconds between updates of the aiortc sender's packet and octet counts


class SendTurn:
    """The slots with packets queued in this turn of the event loop, sent by one callback.

    A packet fans out to every subscriber in the same turn: one callback sends for
    all of them, where a callback (or a task) per slot cost more than the send.
    """

    _of_loop: ClassVar[WeakKeyDictionary[asyncio.AbstractEventLoop, SendTurn]] = WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[PacketForwarder] = []

    @classmethod
    def of_running_loop(cls) -> SendTurn:
        loop = asyncio.get_running_loop()
        turn = cls._of_loop.get(loop)
        if turn is None:
            turn = cls._of_loop[loop] = cls(loop)
        return turn

    def add(self, forwarder: PacketForwarder) -> None:
        if not self._due:
            self._loop.call_soon(self._send)
        self._due.append(forwarder)

    def _send(self) -> None:
        due, self._due = self._due, []
        for forwarder in due:
            forwarder.flush()


class PacketForwarder:
    """The sending half of a forwarding slot; ready once its aiortc sender has started."""

    def __init__(
        self,
        sender: RTCRtpSender,
        kind: str,
        latency: LatencyHistogram,
        request_keyframe: Callable[[], None],
    ) -> None:
        self._sender = sender
        self.kind = kind
        self._latency = latency
        self._request_keyframe = request_keyframe
        self._rewriter: StreamRewriter | None = None
        self._extensions = ExtensionWriter({}, None)
        self._ssrc = self._rtx_ssrc = self._payload_type = 0
        self._rtx_payload_type: int | None = None
        self._rtx_sequence_number = random.randrange(1 << 16)
        self._queue: deque[tuple[bytes, float, int, int]] = deque()
        self._max_backlog = MAX_BACKLOG[kind]
        self._send = DirectRtpSend(sender)
        self._turn: SendTurn | None = None
        self._flush_due = False  # queued with the turn's sends
        self._uncounted_packets = self._uncounted_octets = self._last_timestamp = 0
        self._counted_at = -COUNT_EVERY
        self._asked = -KEYFRAME_REASK
        self._estimate: tuple[int, float] | None = None
        self.sent = 0
        self.dropped = 0
        self.retransmitted = 0
        route_retransmissions(sender, self.retransmit)
        observe_remb(sender, self._on_remb)

    @property
    def ready(self) -> bool:
        return self._rewriter is not None

    def start(self, codec: RTCRtpCodecParameters, codecs: list[RTCRtpCodecParameters]) -> None:
        """The sender started with ``codec``: learn its SSRC, MID and extension ids."""
        identity = sender_identity(self._sender)
        assert codec.payloadType is not None  # a negotiated codec always has one
        self._ssrc, self._rtx_ssrc, self._payload_type = (
            identity.ssrc,
            identity.rtx_ssrc,
            codec.payloadType,
        )
        self._rtx_payload_type = next(
            (
                c.payloadType
                for c in codecs
                if c.mimeType.lower().endswith("/rtx")
                and c.parameters.get("apt") == codec.payloadType
            ),
            None,
        )
        self._extensions = ExtensionWriter(identity.extension_ids, identity.mid)
        self._turn = SendTurn.of_running_loop()
        self._rewriter = StreamRewriter(
            video=self.kind == "video",
            vp8=codec.mimeType.lower() == "video/vp8",
            first_sequence_number=random.randrange(1 << 16),
            first_timestamp=random.randrange(1 << 32),
        )

    def stop(self) -> None:
        if self._uncounted_packets:
            self._count_sent(time.perf_counter())
        self._rewriter = None
        self._queue.clear()

    def resync(self) -> None:
        """Start over at the next keyframe (a new source, or frames were lost)."""
        if self._rewriter is not None:
            self._rewriter.resync()

    # -- the forwarding path --------------------------------------------------------------

    def push(self, packet: SourcePacket) -> None:
        """Rewrite one packet for this subscriber and queue it (called on the event loop)."""
        rewriter = self._rewriter
        if rewriter is None:
            return
        queue = self._queue
        if queue and (len(queue) >= self._max_backlog or self._video_late(packet)):
            self.dropped += 1
            if not rewriter.holding:  # the backlog just overflowed: ask right away
                rewriter.resync()
                self._asked = -KEYFRAME_REASK
                self._ask_keyframe()
            return
        out = rewriter.rewrite(packet, packet.arrival)
        if out is None:
            if rewriter.holding:
                self._ask_keyframe()
            return
        data = self._serialize(packet, out)
        queue.append((data, packet.arrival, len(out.payload), out.timestamp))
        if not self._flush_due:
            self._flush_due = True
            assert self._turn is not None  # set by start(), like the rewriter
            self._turn.add(self)

    def _video_late(self, packet: SourcePacket) -> bool:
        """Whether this slot's oldest waiting video is too far behind the newest packet."""
        return self.kind == "video" and packet.arrival - self._queue[0][1] > MAX_VIDEO_DELAY

    def _serialize(self, packet: SourcePacket, out: Rewritten) -> bytes:
        """The packet as this subscriber gets it: its SSRC, PT, numbering and extension ids."""
        return rtp_bytes(
            packet.marker,
            self._payload_type,
            out.sequence_number,
            out.timestamp,
            self._ssrc,
            self._extensions.block(self._send_time(packet), packet.audio_level),
            out.payload,
        )

    @staticmethod
    def _send_time(packet: SourcePacket) -> int:
        """The packet's abs-send-time: read the clock once per packet, not per subscriber."""
        if packet.abs_send_time < 0:
            packet.abs_send_time = current_abs_send_time()
        return packet.abs_send_time

    def _ask_keyframe(self) -> None:
        now = time.monotonic()
        if self.kind == "video" and now - self._asked >= KEYFRAME_REASK:
            self._asked = now
            self._request_keyframe()

    def flush(self) -> None:
        """Send everything queued since the last turn of the loop."""
        self._flush_due = False
        queue, latency, send = self._queue, self._latency, self._send
        packets = octets = 0
        now = time.perf_counter()  # the batch goes out within microseconds
        while queue:
            data, arrival, size, self._last_timestamp = queue.popleft()
            try:
                send(data)
            except ConnectionError:
                queue.clear()
                break
            latency.record(now - arrival)
            packets += 1
            octets += size
        self.sent += packets
        self._uncounted_packets += packets
        self._uncounted_octets += octets
        if packets and now - self._counted_at >= COUNT_EVERY:
            self._count_sent(now)

    def _count_sent(self, now: float) -> None:
        """Tell the aiortc sender what went out: its RTCP sender reports and stats read it,
        about once a second, so a tenth of a second is fresh enough and spares the work
        per packet."""
        self._counted_at = now
        count_sent(
            self._sender, self._uncounted_packets, self._uncounted_octets, self._last_timestamp
        )
        self._uncounted_packets = self._uncounted_octets = 0

    # -- feedback from the subscriber -------------------------------------------------------

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a NACK from the source's history (RTX when negotiated)."""
        rewriter = self._rewriter
        found = rewriter.locate(sequence_number) if rewriter is not None else None
        if rewriter is None or found is None:
            return
        epoch, source_sequence_number = found
        packet = epoch.source.get(source_sequence_number)
        if packet is None:
            return
        out = rewriter.again(epoch, packet)
        if self._rtx_payload_type is None:
            data = self._serialize(packet, out)
        else:
            extensions = self._extensions.block(current_abs_send_time(), packet.audio_level)
            data = rtp_bytes(
                packet.marker,
                self._rtx_payload_type,
                self._rtx_sequence_number,
                out.timestamp,
                self._rtx_ssrc,
                extensions,
                out.sequence_number.to_bytes(2, "big") + out.payload,
            )
            self._rtx_sequence_number = (self._rtx_sequence_number + 1) % (1 << 16)
        with contextlib.suppress(ConnectionError):
            self._send(data)
            self.retransmitted += 1

    def _on_remb(self, bitrate: int) -> None:
        self._estimate = (bitrate, time.monotonic())

    @property
    def estimate(self) -> int | None:
        """The subscriber's latest bandwidth estimate (REMB, bits/s), if recent."""
        if self._estimate is None or time.monotonic() - self._estimate[1] > ESTIMATE_TTL:
            return None
        return self._estimate[0]

    def stats(self) -> dict[str, object]:
        rewriter = self._rewriter
        return {
            "packets": self.sent,
            "dropped": self.dropped,
            "retransmitted": self.retransmitted,
            "queued": len(self._queue),
            "switches": rewriter.switches if rewriter else 0,
            "estimate": self.estimate,
        }

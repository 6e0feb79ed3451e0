"""Per-subscriber RTP rewriting: many sources, one continuous outgoing stream.

A subscriber's slot may carry different publishers over time (speaker
following, a late joiner, a publisher's reconnect) and may skip packets (a
send backlog that overflowed). Browsers expect one stream per m-line: one SSRC,
sequence numbers without gaps, timestamps that never go backwards, VP8 picture
ids that keep counting. :class:`StreamRewriter` keeps that illusion by mapping
each source's numbers through offsets, re-anchored on every switch, and
remembers recent offsets so that a NACK for an outgoing sequence number can be
traced back to the source packet. Pure: no aiortc, no I/O.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
_HEADER = struct.Struct("!BBHLL")
_H264_KEY_NALS = (5, 7)  # IDR slice, SPS
_H264_STAP_A, _H264_FU_A = 24, 28


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (RFC 3550 wrap-around)."""
    return a != b and (a - b) % SEQ_MOD < SEQ_MOD // 2


# -- codec payloads ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    """A VP8 payload descriptor (RFC 7741): the fields an SFU rewrites, and where they are."""

    size: int  # bytes of descriptor before the VP8 payload
    start: bool  # S bit with partition 0: the packet starts a frame
    picture_id_at: int = -1  # byte offset of the picture id, -1 when absent
    picture_id_bits: int = 0  # 7 or 15
    tl0_at: int = -1  # byte offset of TL0PICIDX, -1 when absent
    picture_id: int | None = None
    tl0: int | None = None


def vp8_descriptor(payload: bytes) -> Vp8Descriptor | None:
    """Parse the descriptor, or None when the payload is too short to hold one."""
    if not payload:
        return None
    first = payload[0]
    start = bool(first & 0x10) and (first & 0x07) == 0
    if not first & 0x80:  # no extension byte
        return Vp8Descriptor(1, start)
    if len(payload) < 2:
        return None
    flags, at = payload[1], 2
    picture_id_at, bits, tl0_at = -1, 0, -1
    if flags & 0x80:  # I: picture id
        if len(payload) <= at:
            return None
        picture_id_at, bits = at, (15 if payload[at] & 0x80 else 7)
        at += 2 if bits == 15 else 1
    if flags & 0x40:  # L: TL0PICIDX
        tl0_at = at
        at += 1
    if flags & 0x30:  # T or K: TID/KEYIDX byte
        at += 1
    if len(payload) < at:
        return None
    picture_id = None
    if bits == 15:
        picture_id = ((payload[picture_id_at] & 0x7F) << 8) | payload[picture_id_at + 1]
    elif bits == 7:
        picture_id = payload[picture_id_at] & 0x7F
    tl0 = payload[tl0_at] if tl0_at >= 0 else None
    return Vp8Descriptor(at, start, picture_id_at, bits, tl0_at, picture_id, tl0)


def starts_keyframe(mime_type: str, payload: bytes) -> bool:
    """Whether an RTP payload is the first packet of a keyframe (audio: any packet)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        descriptor = vp8_descriptor(payload)
        return (
            descriptor is not None
            and descriptor.start
            and len(payload) > descriptor.size
            and not payload[descriptor.size] & 0x01  # P bit clear: a key frame
        )
    if mime == "video/h264":
        return _h264_starts_keyframe(payload)
    return mime.startswith("audio/")


def starts_frame(mime_type: str, payload: bytes) -> bool:
    """Whether an RTP payload is the first packet of a frame (audio: any packet)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        descriptor = vp8_descriptor(payload)
        return descriptor is not None and descriptor.start
    if mime == "video/h264":
        if not payload:
            return False
        nal = payload[0] & 0x1F
        return nal != _H264_FU_A or (len(payload) > 1 and bool(payload[1] & 0x80))
    return True


def _h264_starts_keyframe(payload: bytes) -> bool:
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in _H264_KEY_NALS:
        return True
    if nal == _H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F in _H264_KEY_NALS
    if nal == _H264_STAP_A:
        at = 1
        while at + 2 < len(payload):
            size = (payload[at] << 8) | payload[at + 1]
            if payload[at + 2] & 0x1F in _H264_KEY_NALS:
                return True
            at += 2 + size
    return False


# -- header extensions ------------------------------------------------------------------------


class ExtensionWriter:
    """Serializes the header extensions a forwarded packet carries for one subscriber.

    Only what the subscriber negotiated, with its own ids: its MID for the
    m-line, abs-send-time (our send time, for its bandwidth estimator) and the
    publisher's audio level.
    """

    def __init__(self, ids: dict[str, int], mid: str | None) -> None:
        self._two_byte = any(value > 14 for value in ids.values())
        self._mid = self._element(ids["mid"], mid.encode()) if "mid" in ids and mid else b""
        self._abs_send_time = self._element(ids.get("abs_send_time", 0), bytes(3))[:-3]
        self._audio_level = self._element(ids.get("audio_level", 0), bytes(1))[:-1]
        # (header up to the first variable element, padding) for each combination of
        # the two per-packet values being present: one lookup and a few joins per packet.
        self._frames = {
            (with_time, with_level): self._frame(with_time, with_level)
            for with_time in (False, True)
            for with_level in (False, True)
        }

    def _element(self, ext_id: int, value: bytes) -> bytes:
        """An element's id/length prefix and value; empty when the extension is not negotiated."""
        if not ext_id:
            return b""
        if self._two_byte:
            return bytes((ext_id, len(value))) + value
        return bytes(((ext_id << 4) | (len(value) - 1),)) + value

    def _frame(self, with_time: bool, with_level: bool) -> tuple[bytes, bytes] | None:
        length = len(self._mid)
        length += len(self._abs_send_time) + 3 if with_time and self._abs_send_time else 0
        length += len(self._audio_level) + 1 if with_level and self._audio_level else 0
        if not length:
            return None
        padding = bytes(-length % 4)
        profile = 0x1000 if self._two_byte else 0xBEDE
        return struct.pack("!HH", profile, (length + len(padding)) >> 2) + self._mid, padding

    def block(self, abs_send_time: int | None, audio_level: int | None) -> bytes:
        """The extension block (profile, length, padded elements); empty when none apply."""
        with_time = abs_send_time is not None and bool(self._abs_send_time)
        with_level = audio_level is not None and bool(self._audio_level)
        frame = self._frames[with_time, with_level]
        if frame is None:
            return b""
        head, padding = frame
        if with_time:
            head += self._abs_send_time + abs_send_time.to_bytes(3, "big")  # type: ignore[union-attr]
        if with_level:
            head += self._audio_level + bytes((audio_level,))  # type: ignore[arg-type]
        return head + padding


def rtp_bytes(
    marker: bool,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    extensions: bytes,
    payload: bytes,
) -> bytes:
    """An RTP packet without CSRCs or padding."""
    header = _HEADER.pack(
        0x90 if extensions else 0x80,
        (marker << 7) | payload_type,
        sequence_number,
        timestamp,
        ssrc,
    )
    return header + extensions + payload


# -- the rewriter -------------------------------------------------------------------------------


@dataclass(slots=True)
class SourcePacket:
    """One RTP packet as a source produced it, parsed once for every subscriber."""

    source: PacketHistory  # the stream it belongs to (a new source re-anchors)
    sequence_number: int
    timestamp: int
    marker: bool
    payload: bytes
    clock_rate: int
    keyframe: bool  # first packet of a keyframe (every audio packet)
    frame_start: bool  # first packet of a frame (every audio packet)
    audio_level: int | None = None  # the ssrc-audio-level byte (V bit and -dBov)
    arrival: float = 0.0  # when it reached the server (time.perf_counter)
    # Its VP8 descriptor, parsed by the first subscriber's rewriter for all the others
    # (False: not parsed yet; None: none could be parsed).
    vp8: Vp8Descriptor | bool | None = False
    # The abs-send-time it is forwarded with, stamped by the first subscriber's slot for
    # all the others (they send it in the same turn of the event loop); -1: not yet.
    abs_send_time: int = -1

    def vp8_descriptor(self) -> Vp8Descriptor | None:
        descriptor = self.vp8
        if descriptor is False:
            descriptor = self.vp8 = vp8_descriptor(self.payload)
        return descriptor if isinstance(descriptor, Vp8Descriptor) else None


@dataclass(slots=True)
class Epoch:
    """A run of packets from one source, mapped with fixed offsets."""

    source: PacketHistory
    first_in: int  # the source's sequence number that started the run
    first_out: int  # the outgoing sequence number it became
    seq_delta: int
    ts_delta: int
    picture_id_delta: int = 0
    tl0_delta: int = 0
    newest_in: int = -1  # the newest source sequence number so far
    advanced: int = 0  # packets from first_in to newest_in, not wrapped

    def admits(self, sequence_number: int) -> bool:
        """Whether a packet belongs to this run rather than to before it (and note how far).

        Sequence numbers wrap every 65,536 packets (10-20 minutes of video), so a
        packet's place is judged from the newest one seen, never from the first:
        "more than half the circle after ``first_in``" stops meaning "before it"
        once the run is older than that.
        """
        if self.newest_in < 0:
            self.newest_in = self.first_in
        ahead = (sequence_number - self.newest_in) % SEQ_MOD
        if ahead < SEQ_MOD // 2:
            self.newest_in = sequence_number
            self.advanced += ahead
            return True
        return self.advanced >= SEQ_MOD - ahead  # behind the newest, but inside the run


@dataclass(slots=True)
class Rewritten:
    sequence_number: int
    timestamp: int
    payload: bytes


@dataclass
class StreamRewriter:
    """Maps packets of whichever source feeds a slot onto the slot's single stream.

    ``resync()`` (a new source, or packets dropped) makes the next acceptable
    packet start a new :class:`Epoch`: for video that is the first packet of a
    keyframe, for audio any packet. The new epoch continues the outgoing
    sequence numbers by one, and the timestamps by the time that passed.
    """

    video: bool
    vp8: bool
    first_sequence_number: int = 0
    first_timestamp: int = 0
    epochs: deque[Epoch] = field(default_factory=lambda: deque(maxlen=8))
    last_sequence_number: int | None = None
    last_timestamp: int = 0
    last_time: float = 0.0
    last_picture_id: int = -1
    last_tl0: int = -1
    holding: bool = True  # waiting for a packet to anchor the next epoch
    switches: int = 0

    @property
    def epoch(self) -> Epoch | None:
        return self.epochs[-1] if self.epochs else None

    def resync(self) -> None:
        """Drop until the next anchor point (video: a keyframe), then continue seamlessly."""
        self.holding = True

    def rewrite(self, packet: SourcePacket, now: float) -> Rewritten | None:
        """The packet in the slot's numbering, or None when it must not be sent."""
        epoch = self.epoch
        if epoch is None or epoch.source is not packet.source or self.holding:
            if self.video and not packet.keyframe:
                return None
            epoch = self._anchor(packet, now)
        elif not epoch.admits(packet.sequence_number):
            return None  # from before this epoch started
        rewritten = self._apply(epoch, packet)
        first = self.last_sequence_number is None
        if first or seq_newer(rewritten.sequence_number, self.last_sequence_number or 0):
            self.last_sequence_number = rewritten.sequence_number
            # The very first packet sets the clock whatever its (random) timestamp.
            if first or (rewritten.timestamp - self.last_timestamp) % TS_MOD < TS_MOD // 2:
                self.last_timestamp, self.last_time = rewritten.timestamp, now
        return rewritten

    def _anchor(self, packet: SourcePacket, now: float) -> Epoch:
        if self.last_sequence_number is None:
            next_seq, next_ts = self.first_sequence_number, self.first_timestamp
        else:
            next_seq = (self.last_sequence_number + 1) % SEQ_MOD
            step = max(1, round((now - self.last_time) * packet.clock_rate))
            next_ts = (self.last_timestamp + step) % TS_MOD
        epoch = Epoch(
            packet.source,
            packet.sequence_number,
            next_seq,
            next_seq - packet.sequence_number,
            next_ts - packet.timestamp,
        )
        if self.vp8:
            descriptor = packet.vp8_descriptor()
            if descriptor is not None:
                picture_id = descriptor.picture_id
                if picture_id is not None and self.last_picture_id >= 0:
                    epoch.picture_id_delta = self.last_picture_id + 1 - picture_id
                tl0 = descriptor.tl0
                if tl0 is not None and self.last_tl0 >= 0:
                    epoch.tl0_delta = self.last_tl0 + 1 - tl0
        if self.epochs:
            self.switches += 1
        self.epochs.append(epoch)
        self.holding = False
        return epoch

    def _apply(self, epoch: Epoch, packet: SourcePacket) -> Rewritten:
        payload = self._rewrite_vp8(epoch, packet) if self.vp8 else packet.payload
        return Rewritten(
            (packet.sequence_number + epoch.seq_delta) % SEQ_MOD,
            (packet.timestamp + epoch.ts_delta) % TS_MOD,
            payload,
        )

    def _rewrite_vp8(self, epoch: Epoch, packet: SourcePacket) -> bytes:
        """Shift picture id and TL0PICIDX by the epoch's deltas (no copy when both are 0)."""
        payload = packet.payload
        descriptor = packet.vp8_descriptor()
        if descriptor is None:
            return payload
        picture_id, tl0 = descriptor.picture_id, descriptor.tl0
        if not (epoch.picture_id_delta or epoch.tl0_delta):
            self.last_picture_id = self.last_picture_id if picture_id is None else picture_id
            self.last_tl0 = self.last_tl0 if tl0 is None else tl0
            return payload
        data = bytearray(payload)
        if picture_id is not None:
            at = descriptor.picture_id_at
            if descriptor.picture_id_bits == 15:
                picture_id = (picture_id + epoch.picture_id_delta) % (1 << 15)
                data[at], data[at + 1] = 0x80 | (picture_id >> 8), picture_id & 0xFF
            else:
                picture_id = (picture_id + epoch.picture_id_delta) % (1 << 7)
                data[at] = picture_id
            self.last_picture_id = picture_id
        if tl0 is not None:
            tl0 = (tl0 + epoch.tl0_delta) % 256
            data[descriptor.tl0_at] = tl0
            self.last_tl0 = tl0
        return bytes(data)

    # -- retransmissions ---------------------------------------------------------------------

    def locate(self, sequence_number: int) -> tuple[Epoch, int] | None:
        """The epoch and source sequence number an outgoing packet came from, if recent."""
        if self.last_sequence_number is None:
            return None
        end = (self.last_sequence_number + 1) % SEQ_MOD
        newest = True
        for epoch in reversed(self.epochs):
            # How many packets the run sent before ``end``; the newest one may be older
            # than the 16-bit circle, and only its latest half can still be asked for.
            if newest:
                length = min(epoch.advanced + 1, SEQ_MOD // 2)
            else:
                length = (end - epoch.first_out) % SEQ_MOD
            if 0 < (end - sequence_number) % SEQ_MOD <= length:
                return epoch, (sequence_number - epoch.seq_delta) % SEQ_MOD
            end, newest = epoch.first_out, False
        return None

    def again(self, epoch: Epoch, packet: SourcePacket) -> Rewritten:
        """A packet rewritten as it was first sent in ``epoch`` (for a retransmission)."""
        last = self.last_picture_id, self.last_tl0
        payload = self._rewrite_vp8(epoch, packet) if self.vp8 else packet.payload
        self.last_picture_id, self.last_tl0 = last
        return Rewritten(
            (packet.sequence_number + epoch.seq_delta) % SEQ_MOD,
            (packet.timestamp + epoch.ts_delta) % TS_MOD,
            payload,
        )


class PacketHistory:
    """The last ``size`` packets of one source, by sequence number, to answer NACKs."""

    def __init__(self, size: int = 512) -> None:
        self._packets: list[SourcePacket | None] = [None] * size

    def add(self, packet: SourcePacket) -> None:
        self._packets[packet.sequence_number % len(self._packets)] = packet

    def get(self, sequence_number: int) -> SourcePacket | None:
        packet = self._packets[sequence_number % len(self._packets)]
        if packet is not None and packet.sequence_number == sequence_number:
            return packet
        return None

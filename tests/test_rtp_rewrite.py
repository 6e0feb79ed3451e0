"""The per-subscriber RTP rewriter and the forward-latency histogram: pure units."""

from __future__ import annotations

import itertools

import pytest

from server.media.latency import LatencyHistogram
from server.media.rtp_rewrite import (
    PacketHistory,
    SourcePacket,
    StreamRewriter,
    seq_newer,
    vp8_descriptor,
)


def vp8(history, seq, ts, picture_id, tl0, *, keyframe=False, start=True) -> SourcePacket:
    """A VP8 packet with a 15-bit picture id and TL0PICIDX (RFC 7741)."""
    descriptor = bytes(
        [0x90 if start else 0x80, 0xC0, 0x80 | (picture_id >> 8), picture_id & 0xFF, tl0]
    )
    body = bytes([0x00 if keyframe else 0x01]) + bytes(20)
    packet = SourcePacket(
        history, seq, ts, True, descriptor + body, 90000, keyframe and start, start
    )
    history.add(packet)
    return packet


def audio(history, seq, ts) -> SourcePacket:
    packet = SourcePacket(history, seq, ts, False, b"\x78" + bytes(10), 48000, True, True)
    history.add(packet)
    return packet


def fields(payload: bytes) -> tuple[int, int]:
    descriptor = vp8_descriptor(payload)
    return descriptor.picture_id, descriptor.tl0


def test_video_switches_sources_only_at_a_keyframe_and_stays_continuous():
    rewriter = StreamRewriter(video=True, vp8=True, first_sequence_number=65534, first_timestamp=10)
    a, b = PacketHistory(), PacketHistory()
    out = []
    assert rewriter.rewrite(vp8(a, 100, 5000, 32766, 250), now=0.0) is None  # not a keyframe
    for n in range(4):
        packet = vp8(a, 101 + n, 6000 + 3000 * n, 32767 + n, 251 + n, keyframe=n == 0)
        out.append(rewriter.rewrite(packet, now=0.1 * n))
    # Another source arrives: its delta frames are held back, its keyframe starts the new run.
    assert rewriter.rewrite(vp8(b, 7, 900_000, 12, 3), now=0.35) is None
    for n in range(3):
        packet = vp8(b, 8 + n, 903_000 + 3000 * n, 13 + n, 4 + n, keyframe=n == 0)
        out.append(rewriter.rewrite(packet, now=0.4 + 0.1 * n))
    seqs = [o.sequence_number for o in out]
    assert seqs == [65534, 65535, 0, 1, 2, 3, 4]  # one run, across the wrap and the switch
    stamps = [o.timestamp for o in out]
    assert stamps[:4] == [10, 3010, 6010, 9010]
    assert stamps[4] == 9010 + round(0.1 * 90000)  # the wall-clock time that passed
    assert all(later > earlier for earlier, later in itertools.pairwise(stamps))
    picture_ids = [fields(o.payload)[0] for o in out]
    assert picture_ids == [32767, 0, 1, 2, 3, 4, 5]  # 15 bits wrap; the new source continues
    tl0s = [fields(o.payload)[1] for o in out]
    assert tl0s == [251, 252, 253, 254, 255, 0, 1]
    assert rewriter.switches == 1


def test_audio_switches_at_any_packet_and_packets_from_before_the_switch_are_dropped():
    rewriter = StreamRewriter(video=False, vp8=False, first_sequence_number=5, first_timestamp=0)
    a, b = PacketHistory(), PacketHistory()
    first = [rewriter.rewrite(audio(a, 40 + n, 960 * n), now=0.02 * n) for n in range(3)]
    switched = rewriter.rewrite(audio(b, 9000, 123_456), now=0.06)
    assert [p.sequence_number for p in [*first, switched]] == [5, 6, 7, 8]
    assert switched.timestamp == 1920 + 960
    assert rewriter.rewrite(audio(b, 8999, 122_496), now=0.08) is None  # from before b's run
    assert rewriter.rewrite(audio(b, 9001, 124_416), now=0.08).sequence_number == 9


@pytest.mark.parametrize("first_timestamp", [0, 2**31 + 5, 2**32 - 100])
def test_a_switch_continues_the_timestamps_whatever_the_random_start(first_timestamp):
    """The first packet sets the clock even when its timestamp looks "behind" zero."""
    rewriter = StreamRewriter(video=False, vp8=False, first_timestamp=first_timestamp)
    a, b = PacketHistory(), PacketHistory()
    before = [rewriter.rewrite(audio(a, n, 960 * n), now=1000 + 0.02 * n) for n in range(3)]
    switched = rewriter.rewrite(audio(b, 500, 7), now=1000.1)
    stamps = [p.timestamp for p in [*before, switched]]
    steps = [(later - earlier) % 2**32 for earlier, later in itertools.pairwise(stamps)]
    assert steps == [960, 960, round(0.06 * 48000)]


def test_a_resync_holds_video_until_a_keyframe_without_a_sequence_gap():
    rewriter = StreamRewriter(video=True, vp8=True)
    a = PacketHistory()
    rewriter.rewrite(vp8(a, 1, 0, 1, 1, keyframe=True), now=0)
    rewriter.resync()  # e.g. the send backlog overflowed
    assert rewriter.rewrite(vp8(a, 2, 3000, 2, 2), now=0.03) is None
    assert rewriter.rewrite(vp8(a, 3, 6000, 3, 3), now=0.06) is None
    resumed = rewriter.rewrite(vp8(a, 4, 9000, 4, 4, keyframe=True), now=0.09)
    assert resumed.sequence_number == 1
    assert fields(resumed.payload) == (2, 2)  # picture ids continue too


def test_a_nack_finds_the_source_packet_even_from_an_earlier_source():
    rewriter = StreamRewriter(video=False, vp8=False, first_sequence_number=1000)
    a, b = PacketHistory(), PacketHistory()
    for n in range(5):
        rewriter.rewrite(audio(a, 200 + n, 960 * n), now=0.0)
    for n in range(5):
        rewriter.rewrite(audio(b, 60000 + n, 960 * n), now=0.1)
    epoch, source_seq = rewriter.locate(1003)
    assert epoch.source is a and source_seq == 203
    again = rewriter.again(epoch, a.get(source_seq))
    assert again.sequence_number == 1003
    epoch, source_seq = rewriter.locate(1007)
    assert epoch.source is b and source_seq == 60002
    assert rewriter.locate(1010) is None  # not sent yet
    assert rewriter.locate(999) is None  # never sent


def test_a_run_longer_than_half_the_sequence_circle_keeps_forwarding():
    """Sequence numbers wrap every 65,536 packets: a 20-minute call must not stop at 32,768."""
    rewriter = StreamRewriter(video=False, vp8=False, first_sequence_number=7)
    a = PacketHistory(size=64)
    start = 60_000  # the source wraps early on, too
    out = [
        rewriter.rewrite(audio(a, (start + n) % 65536, 960 * n), now=0.02 * n)
        for n in range(70_000)
    ]
    assert all(packet is not None for packet in out), "every packet of the run is sent"
    assert [p.sequence_number for p in out[-2:]] == [(7 + 69_998) % 65536, (7 + 69_999) % 65536]
    late = rewriter.rewrite(audio(a, (start + 69_990) % 65536, 0), now=1400.0)
    assert late is not None, "a packet slightly behind the newest still belongs to the run"
    epoch, source_seq = rewriter.locate((7 + 69_995) % 65536)  # a NACK for a recent packet
    assert source_seq == (start + 69_995) % 65536 and epoch is rewriter.epochs[-1]
    assert rewriter.locate((7 + 70_000) % 65536) is None  # not sent yet


def test_a_packet_from_before_a_young_run_is_still_refused():
    rewriter = StreamRewriter(video=False, vp8=False)
    a, b = PacketHistory(), PacketHistory()
    rewriter.rewrite(audio(a, 10, 0), now=0.0)
    rewriter.rewrite(audio(b, 500, 0), now=0.02)  # b's run starts at 500
    for n in range(1, 100):
        assert rewriter.rewrite(audio(b, 500 + n, 960 * n), now=0.02 + 0.02 * n) is not None
    assert rewriter.rewrite(audio(b, 499, 0), now=2.1) is None  # from before b's run


def test_history_keeps_the_latest_packets_only():
    history = PacketHistory(size=4)
    for n in range(6):
        audio(history, n, 0)
    assert history.get(5).sequence_number == 5
    assert history.get(1) is None  # overwritten by 5


def test_sequence_order_wraps():
    assert seq_newer(0, 65535) and not seq_newer(65535, 0) and not seq_newer(7, 7)


@pytest.mark.parametrize(
    ("delays", "p50", "p99"),
    [([0.0003] * 99 + [0.03], 0.375, 0.5), ([0.002] * 50 + [0.015] * 50, 2.5, 19.8)],
)
def test_the_latency_histogram_estimates_quantiles_from_its_buckets(delays, p50, p99):
    histogram = LatencyHistogram()
    for delay in delays:
        histogram.record(delay)
    summary = histogram.summary()
    assert summary["packets"] == len(delays)
    assert summary["p50_ms"] == pytest.approx(p50, abs=0.01)
    assert summary["p99_ms"] == pytest.approx(p99, abs=0.01)
    buckets = histogram.buckets()
    assert buckets[-1] == (float("inf"), len(delays))
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))  # cumulative
    assert LatencyHistogram().summary() == {"packets": 0, "p50_ms": None, "p99_ms": None}

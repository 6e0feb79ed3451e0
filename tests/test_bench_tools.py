"""The benchmark's load generator still works (correctness only: nothing here is timed)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy, Session

from bench.load_client import IDENTIFY_EVERY, VP8_PAYLOAD_TYPE, FrameCounter, SocketStream
from bench.relay_bench import fit, merge, split
from tests.support.server import PROJECT_ROOT


@pytest.mark.media
async def test_load_client_delivers_identified_frames(relay_server, room):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load_client", "--url", relay_server.url,
        "--room", room("bench"), "--publishers", "2", "--subscribers", "2",
        "--duration", "2", "--warmup", "0.5", "--late-joiners", "1", "--probes", "1",
        cwd=PROJECT_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout and process.stdin
    assert (await asyncio.wait_for(process.stdout.readline(), 120)).startswith(b"READY")
    process.stdin.write(b"GO\n")
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    result = json.loads(output.decode().split("RESULT ", 1)[1])
    summary = merge([result])
    assert summary["streams"] == 6  # 2 subscribers x 2 publishers + the publishers' 2
    assert summary["fps_min"] > 5
    assert summary["identity_mismatched"] == 0 and summary["unidentified_frames"] == 0
    frames_received = summary["frames_per_s"] * 2  # in the 2 s window
    assert 0 < summary["frames_looked_up"] < frames_received  # identified: some, not all
    assert summary["probe_decoded_ok"] > 0 and summary["probe_decoded_wrong"] == 0
    assert summary["late_join_keyframe_first"]


def test_the_load_clients_frame_counter_reads_plain_rtp_as_aiortc_does():
    """What ``count_at_the_socket`` hands over skips aiortc's parser: the payload must come
    out the same, whatever CSRCs, header extension and padding the packet has."""
    frames: list[bytes] = []
    counter = FrameCounter(frames.append)
    first = RtpPacket(payload_type=VP8_PAYLOAD_TYPE, sequence_number=1, timestamp=90)
    first.csrc = [7, 8]
    first.payload = b"\x10" + b"first half "  # VP8 descriptor: start of a partition
    second = RtpPacket(payload_type=VP8_PAYLOAD_TYPE, marker=1, sequence_number=2, timestamp=90)
    second.padding_size = 5
    second.payload = b"\x00" + b"second half"
    extension = bytes.fromhex("bede0001") + bytes.fromhex("32aabbcc")  # one-byte form, 1 word
    raw = second.serialize()
    with_extension = bytes([raw[0] | 0x10]) + raw[1:12] + extension + raw[12:]
    assert RtpPacket.parse(with_extension).payload == second.payload  # a valid packet
    for data in (first.serialize(), with_extension):
        counter.plain_rtp(data)
    assert frames == [b"first half second half"]
    unrelated = RtpPacket(payload_type=VP8_PAYLOAD_TYPE + 1, marker=1, timestamp=180)  # RTX
    unrelated.payload = b"\x10x"
    counter.plain_rtp(unrelated.serialize())
    assert len(frames) == 1


def test_the_load_clients_socket_stream_counts_every_frame_and_decrypts_a_few():
    """Frames and lost packets come from SRTP's clear header; one frame in
    ``IDENTIFY_EVERY`` is decrypted whole and identified by its bytes."""
    key = bytes(range(30))
    sender = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    receiver = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    identified: list[bytes] = []
    unread: list[None] = []
    stream = SocketStream(FrameCounter(identified.append), lambda: unread.append(None))
    frames = 2 * IDENTIFY_EVERY
    sequence = 0
    for number in range(frames):
        for part, marker in ((b"\x10head%d " % number, 0), (b"\x00tail", 1)):
            sequence += 1
            if number == 3 and marker:
                continue  # lost: frame 3 is never complete
            packet = RtpPacket(
                payload_type=VP8_PAYLOAD_TYPE,
                marker=marker,
                sequence_number=sequence,
                timestamp=3000 * number,
                ssrc=5,
            )
            packet.payload = part
            stream.datagram(sender.protect(packet.serialize()), receiver)
        rtx = RtpPacket(payload_type=VP8_PAYLOAD_TYPE + 1, marker=1, sequence_number=sequence)
        rtx.payload = b"\x00rtx"
        stream.datagram(sender.protect(rtx.serialize()), receiver)  # not a frame
    assert identified == [b"head0 tail", b"head%d tail" % IDENTIFY_EVERY]
    assert len(identified) + len(unread) == frames - 1
    assert stream.lost == 1


def test_bench_arithmetic():
    assert split(4, 2) == [(0, 2), (2, 4)]
    assert [end - first for first, end in split(5, 2)] in ([2, 3], [3, 2])
    slope, intercept = fit([(10, 5.0), (20, 7.0), (30, 9.0)])
    assert round(slope, 6) == 0.2 and round(intercept, 6) == 3.0


def test_report_sections_are_replaced_in_place(tmp_path):
    from bench.report import replace_section  # noqa: PLC0415

    report = tmp_path / "benchmark.md"
    replace_section(report, "relay", "# Relay\nold\n")
    replace_section(report, "signaling", "# Signalling\nfirst\n")
    replace_section(report, "relay", "# Relay\nnew\n")
    text = report.read_text()
    assert "old" not in text and text.count("# Relay") == 1
    assert text.index("new") < text.index("first")


async def signaling_load(url: str, clients: int) -> dict:
    """One run of the signalling load process: connect, join in pairs, relay ice for 1 s."""
    process = await asyncio.create_subprocess_exec(
        "node", "bench/signaling_load.mjs", url, str(clients), "bench-test", "10", "1",
        cwd=PROJECT_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout and process.stdin
    for command, answer in (("JOIN", b"READY"), ("GO", b"JOINED")):
        assert (await asyncio.wait_for(process.stdout.readline(), 60)).startswith(answer)
        process.stdin.write(command.encode() + b"\n")
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return json.loads(output.decode().split("RESULT ", 1)[1])


@pytest.mark.slow
async def test_signaling_load_relays_against_both_servers(p2p_server):
    from bench.signaling_bench import merge as merge_signaling  # noqa: PLC0415

    node = await asyncio.create_subprocess_exec(
        "node", "bench/node_relay_server.mjs", "0", cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert node.stdout
        line = await asyncio.wait_for(node.stdout.readline(), 30)
        node_url = "http://127.0.0.1:" + line.decode().split()[1]
        for url in (p2p_server.url, node_url):
            summary = merge_signaling([await signaling_load(url, 4)])
            assert summary["connected"] == 4 and summary["welcomes"] == 2
            assert summary["welcome_missing"] == 0
            assert summary["sent"] > 0 and summary["lost"] == 0
            assert summary["duplicates"] == 0 and summary["misrouted"] == 0
    finally:
        node.terminate()
        await node.wait()

"""Forwarding encoded frames: keyframes for late joiners, PLI, overflow recovery, codec fallback."""

from __future__ import annotations

import asyncio
import itertools
import time

import aioice
import aiortc.clock
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

from bench.synthetic import is_keyframe
from server.client import RoomClient
from server.media import aiortc_hooks
from server.media.aiortc_hooks import AiortcInternalsChanged, check_aiortc_internals
from server.media.forwarder import MAX_BACKLOG, PacketForwarder
from server.media.latency import LatencyHistogram
from server.media.rtp_rewrite import (
    ExtensionWriter,
    PacketHistory,
    SourcePacket,
    rtp_bytes,
    starts_keyframe,
)
from tests.support.media import (
    COLOURS,
    TONES,
    ColourTrack,
    ToneTrack,
    identify_video,
)
from tests.support.polling import eventually

pytestmark = pytest.mark.media


class TappingClient(RoomClient):
    """A RoomClient that also records every encoded video frame it receives, per mid."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: dict[str, list[tuple[float, bool]]] = {}
        self.receivers = {}

    async def _drain(self, track) -> None:
        transceiver = next(t for t in self._pc.getTransceivers() if t.receiver.track is track)
        if track.kind == "video":
            frames = self.encoded.setdefault(transceiver.mid, [])
            tap = aiortc_hooks.tap_encoded_frames(
                transceiver.receiver,
                lambda codec, frame: frames.append(
                    (time.monotonic(), is_keyframe(codec.mimeType, frame.data))
                ),
            )
            tap.decoding = True  # keep decoding too, so the client still gets frames
            self.receivers[transceiver.mid] = transceiver.receiver
        await super()._drain(track)


async def joined(server, room_name, index, cls=RoomClient, *, publish=True, **kwargs):
    client = cls(server.url, nickname=f"p{index}", **kwargs)
    await client.connect()
    tracks = {"audio": ToneTrack(TONES[index]), "video": ColourTrack(COLOURS[index])}
    await client.join(room_name, **(tracks if publish else {}))
    await client.wait_connected()
    return client


def room_media(server, room_name):
    rooms = {entry["name"]: entry for entry in server.get_json("/rooms")["rooms"]}
    return {peer["peer_id"]: peer for peer in rooms[room_name]["media"]["peers"]}


async def test_late_joiner_sees_a_keyframe_first_within_a_second(relay_server, room):
    name = room()
    publisher = await joined(relay_server, name, 0)
    await asyncio.sleep(1.5)  # the publisher is well past its first keyframe
    late = TappingClient(relay_server.url, nickname="late")
    await late.connect()
    try:
        started = time.monotonic()
        await late.join(name)
        await late.wait_for_media([publisher.peer_id])
        mid = late.mid_of(publisher.peer_id, "video")

        async def first_frame():
            while not late.encoded.get(mid):
                await asyncio.sleep(0.01)
            return late.encoded[mid][0]

        arrival, keyframe = await asyncio.wait_for(first_frame(), 5)
        assert keyframe, "the first forwarded frame must be a keyframe"
        assert arrival - started < 1.0, f"first frame after {arrival - started:.2f}s"
        assert await identify_video(late.subscribe(publisher.peer_id, "video")) == COLOURS[0]
    finally:
        await late.close()
        await publisher.close()


async def test_a_publisher_that_ignores_the_first_requests_still_reaches_a_late_joiner(
    relay_server, room
):
    name = room()
    publisher = await joined(relay_server, name, 0)
    sender = next(
        t.sender for t in publisher._pc.getTransceivers() if t.sender.track.kind == "video"
    )
    ignored, honour = [], sender._send_keyframe

    def deaf_at_first() -> None:  # its encoder ignores two keyframe requests (PLI or FIR)
        if len(ignored) < 2:
            ignored.append(time.monotonic())
        else:
            honour()

    sender._send_keyframe = deaf_at_first
    await asyncio.sleep(1.5)  # well past its first keyframe
    late = TappingClient(relay_server.url, nickname="late")
    await late.connect()
    try:
        await late.join(name)
        await late.wait_for_media([publisher.peer_id])
        mid = late.mid_of(publisher.peer_id, "video")
        await eventually(lambda: late.encoded.get(mid), timeout=10)
        assert late.encoded[mid][0][1], "the first forwarded frame is still a keyframe"
        assert len(ignored) == 2
        assert await identify_video(late.subscribe(publisher.peer_id, "video")) == COLOURS[0]
        publication = room_media(relay_server, name)[publisher.peer_id]["publications"]["1"]
        assert publication["firs_sent"] >= 1, publication  # the retries escalated to FIR
        assert publication["longest_keyframe_wait"] >= 0.4
    finally:
        await late.close()
        await publisher.close()


async def test_subscriber_pli_gets_a_keyframe_and_many_requests_cost_few(relay_server, room):
    name = room()
    publisher = await joined(relay_server, name, 0)
    subscribers = [
        await joined(relay_server, name, i, TappingClient, publish=False) for i in range(1, 7)
    ]
    try:
        mids = []
        for client in subscribers:
            await client.wait_for_media([publisher.peer_id])
            mids.append(client.mid_of(publisher.peer_id, "video"))
        await asyncio.sleep(1.5)  # let join-time keyframe requests settle
        before = room_media(relay_server, name)[publisher.peer_id]["publications"]["1"]
        counts = [
            sum(k for _, k in c.encoded[mid]) for c, mid in zip(subscribers, mids, strict=False)
        ]

        for client, mid in zip(subscribers, mids, strict=True):  # everybody loses a picture
            receiver = client.receivers[mid]
            for source in receiver.getSynchronizationSources():
                await receiver._send_rtcp_pli(source.source)

        async def everyone_got_a_new_keyframe():
            while any(
                sum(k for _, k in c.encoded[mid]) <= count
                for c, mid, count in zip(subscribers, mids, counts, strict=False)
            ):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(everyone_got_a_new_keyframe(), 3)
        after = room_media(relay_server, name)[publisher.peer_id]["publications"]["1"]
        requests = after["keyframe_requests"] - before["keyframe_requests"]
        plis = after["plis_sent"] - before["plis_sent"]
        assert requests >= 6
        assert 1 <= plis <= 2, f"{requests} requests cost {plis} PLIs"
    finally:
        for client in [publisher, *subscribers]:
            await client.close()


async def negotiated_video_transceiver():
    """A server-side transceiver with agreed codecs, as the relay has after an answer."""
    client, server = RTCPeerConnection(), RTCPeerConnection()
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    transceiver = server.getTransceivers()[0]
    return transceiver, (client, server)


async def test_a_receiver_published_again_keeps_its_tap_and_closes():
    """A second screen share on the same m-line must not strand the decoder thread."""
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    taps, frames = [], []

    def seen(codec, frame) -> None:
        frames.append(frame)

    @receiver.on("track")
    def tapped(track) -> None:  # before aiortc starts the receiver's decoder thread
        transceiver = next(t for t in receiver.getTransceivers() if t.receiver.track is track)
        taps.append(aiortc_hooks.tap_encoded_frames(transceiver.receiver, seen))

    try:
        sender.addTrack(ColourTrack(COLOURS[0]))
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await eventually(lambda: frames, timeout=20)
        started = receiver.getTransceivers()[0].receiver
        again = aiortc_hooks.tap_encoded_frames(started, seen)
        assert again is taps[0] and not again.decoding  # re-armed, not replaced
        untapped = RTCRtpReceiver("video", started.transport)
        untapped._RTCRtpReceiver__decoder_thread = object()  # as if started
        assert aiortc_hooks.tap_encoded_frames(untapped) is None  # too late: decode instead
    finally:
        await asyncio.wait_for(receiver.close(), 10)
        await sender.close()


def vp8_packet(history, number: int, keyframe: bool = False) -> SourcePacket:
    """The single packet of a small VP8 frame (15-bit picture id ``number``)."""
    payload = bytes([0x90, 0x80, 0x80 | (number >> 8) & 0x7F, number & 0xFF])
    payload += bytes([0x00 if keyframe else 0x01]) + bytes(100)
    return SourcePacket(history, number, number * 3000, True, payload, 90000, keyframe, True)


async def test_an_overflowing_slot_drops_and_waits_for_a_keyframe():
    transceiver, connections = await negotiated_video_transceiver()
    try:
        keyframe_requests = []
        forwarder = PacketForwarder(
            transceiver.sender, "video", LatencyHistogram(), lambda: keyframe_requests.append(1)
        )
        forwarder.start(transceiver._codecs[0], transceiver._codecs)
        # No turn of the event loop until the end: nothing leaves the backlog meanwhile.
        history = PacketHistory()
        forwarder.push(vp8_packet(history, 0))  # a delta frame before any keyframe: dropped
        assert len(forwarder._queue) == 0 and keyframe_requests == [1]
        for number in range(1, 2 + MAX_BACKLOG["video"]):
            forwarder.push(vp8_packet(history, number, keyframe=number == 1))
        assert forwarder.dropped == 1 and len(keyframe_requests) == 2

        def sent_meanwhile():  # the sender catches up
            packets = [RtpPacket.parse(data) for data, *_ in forwarder._queue]
            forwarder._queue.clear()
            return packets

        sent = sent_meanwhile()
        forwarder.push(vp8_packet(history, 1000))  # deltas after the gap would smear: dropped
        forwarder.push(vp8_packet(history, 1001, keyframe=True))
        forwarder.push(vp8_packet(history, 1002))
        sent += sent_meanwhile()
        assert len(sent) == MAX_BACKLOG["video"] + 2
        assert {p.ssrc for p in sent} == {transceiver.sender._ssrc}
        assert all(
            (b.sequence_number - a.sequence_number) % 65536 == 1
            for a, b in itertools.pairwise(sent)
        ), "after an overflow the stream continues without a sequence gap"
        resumed = sent[-2]
        assert starts_keyframe("video/vp8", resumed.payload), "and restarts on a keyframe"
        assert (resumed.timestamp - sent[-3].timestamp) % 2**32 < 2**31  # never backwards
        assert sent[-1].timestamp - resumed.timestamp == 3000
        forwarder.stop()
    finally:
        for pc in connections:
            await pc.close()


async def test_codec_alignment_and_fallback(relay_server, room):
    """VP8 and H.264 publishers; subscribers that take both, or only VP8."""
    name = room()
    vp8_only = await joined(relay_server, name, 0, video_codecs=["video/VP8"])
    h264_only = await joined(relay_server, name, 1, video_codecs=["video/H264"])
    both = await joined(relay_server, name, 2)
    try:
        for client, others in ((both, [vp8_only, h264_only]), (vp8_only, [h264_only, both])):
            await client.wait_for_media([o.peer_id for o in others])
        await asyncio.sleep(1)
        media = room_media(relay_server, name)

        def slot_for(subscriber, publisher):
            mid = subscriber.mid_of(publisher.peer_id, "video")
            return media[subscriber.peer_id]["slot_details"][mid]

        assert slot_for(both, vp8_only) == {
            **slot_for(both, vp8_only),
            "mode": "forward",
            "codec": "video/vp8",
        }
        assert slot_for(both, h264_only) == {
            **slot_for(both, h264_only),
            "mode": "forward",
            "codec": "video/h264",
        }
        assert slot_for(vp8_only, h264_only)["mode"] == "decode"  # the only transcoding
        assert slot_for(h264_only, vp8_only)["mode"] == "decode"
        assert media[h264_only.peer_id]["publications"]["1"]["codec"] == "video/H264"
        assert await identify_video(both.subscribe(h264_only.peer_id, "video")) == COLOURS[1]
        assert await identify_video(vp8_only.subscribe(h264_only.peer_id, "video")) == COLOURS[1]
        assert await identify_video(h264_only.subscribe(vp8_only.peer_id, "video")) == COLOURS[0]
    finally:
        for client in (vp8_only, h264_only, both):
            await client.close()


def test_aiortc_internals_are_present():
    check_aiortc_internals()


@pytest.mark.parametrize(
    ("owner", "name", "replacement", "message"),
    [
        (RTCRtpSender, "_send_keyframe", lambda self, urgent: None, "_send_keyframe"),
        (RTCRtpSender, "_retransmit", lambda self, seq, rtx: None, "_retransmit"),
        (RTCRtpSender, "_handle_rtcp_packet", lambda self, p, t: None, "_handle_rtcp_packet"),
        (RTCRtpReceiver, "_send_rtcp", lambda self, p, t: None, "_send_rtcp"),
        (RTCRtpReceiver, "_handle_rtp_packet", lambda self, p: None, "_handle_rtp_packet"),
        (aioice.Connection, "sendto", lambda self, data, c: None, "RTP send path"),
    ],
)
def test_a_missing_aiortc_internal_fails_loudly(monkeypatch, owner, name, replacement, message):
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(AiortcInternalsChanged, match=message):
        check_aiortc_internals()


def test_a_moved_private_attribute_fails_loudly(monkeypatch):
    monkeypatch.setattr(aiortc_hooks, "_EXTENSION_IDS", "_HeaderExtensionsMap__renamed")
    with pytest.raises(AiortcInternalsChanged, match="HeaderExtensionsMap"):
        check_aiortc_internals()


def test_keyframe_starts_are_recognised_in_rtp_payloads():
    vp8_key = b"\x90\x80\x81\x23" + b"\x10\x02\x00\x9d\x01\x2a"
    assert starts_keyframe("video/VP8", vp8_key)
    assert not starts_keyframe("video/VP8", b"\x90\x80\x81\x23" + b"\x11\x02\x00")
    assert not starts_keyframe("video/VP8", b"\x80\x80\x81\x23" + b"\x10")  # not a frame start
    assert starts_keyframe("video/H264", b"\x78\x00\x02\x67\x42\x00\x02\x68\xce")  # STAP-A SPS
    assert starts_keyframe("video/H264", b"\x7c\x85\x88")  # FU-A start of an IDR slice
    assert not starts_keyframe("video/H264", b"\x7c\x05\x88")  # FU-A middle
    assert not starts_keyframe("video/H264", b"\x41\x9a")
    assert starts_keyframe("audio/opus", b"\x78")


def test_the_fast_clock_reads_the_same_clock_as_aiortcs():
    before_ntp, before_ms = aiortc_hooks._current_ntp_time(), aiortc_hooks._current_ms()
    reference_ntp, reference_ms = (
        aiortc.clock.datetime_to_ntp(aiortc.clock.current_datetime()),
        (int((aiortc.clock.current_datetime() - aiortc.clock.NTP_EPOCH).total_seconds() * 1000)),
    )
    assert abs(reference_ntp - before_ntp) / 2**32 < 0.05
    assert abs(reference_ms - before_ms) < 50


@pytest.mark.parametrize("audio_level", [None, 38])
@pytest.mark.parametrize("abs_send_time_id", [3, 15])  # 15: two-byte headers
def test_forwarded_packets_are_exactly_what_aiortc_serializes(audio_level, abs_send_time_id):
    ids = {"mid": 1, "abs_send_time": abs_send_time_id, "audio_level": 4}
    uris = {
        "mid": "urn:ietf:params:rtp-hdrext:sdes:mid",
        "abs_send_time": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "audio_level": "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    }
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=ids[name], uri=uri) for name, uri in uris.items()
            ]
        )
    )
    values = HeaderExtensions(
        mid="2",
        abs_send_time=0x123456,
        audio_level=None if audio_level is None else (True, audio_level),
    )
    writer = ExtensionWriter(ids, "2")
    level_byte = None if audio_level is None else 0x80 | audio_level
    block = writer.block(0x123456, level_byte)
    for marker, payload in ((0, b"\x90\x80" + bytes(range(200))), (1, b"\x10")):
        packet = RtpPacket(
            payload_type=96,
            marker=marker,
            sequence_number=65535,
            timestamp=0xFFFFFFF0,
            ssrc=0xDEADBEEF,
            payload=payload,
        )
        packet.extensions = values
        ours = rtp_bytes(bool(marker), 96, 65535, 0xFFFFFFF0, 0xDEADBEEF, block, payload)
        assert ours == packet.serialize(extensions_map)
        assert RtpPacket.parse(ours, extensions_map).extensions == values
    assert ExtensionWriter({}, "2").block(0x123456, level_byte) == b""


async def test_an_offer_is_parsed_once(monkeypatch):
    """setRemoteDescription takes the parse the offer's validation already made."""
    from aiortc.sdp import SessionDescription  # noqa: PLC0415 - patched by the hooks

    from server.media.offer import parse_offer  # noqa: PLC0415

    # What install_aiortc_hooks() does for this, undone after the test (the other patches
    # would outlive it in this process).
    monkeypatch.setattr(aiortc_hooks, "_installed", True)
    monkeypatch.setattr(SessionDescription, "parse", classmethod(aiortc_hooks._parse_once))
    parses = []
    real_parse = aiortc_hooks._parse_description
    client, server = RTCPeerConnection(), RTCPeerConnection()
    try:
        client.addTransceiver("video", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        monkeypatch.setattr(
            aiortc_hooks, "_parse_description", lambda sdp: parses.append(sdp) or real_parse(sdp)
        )
        sdp = client.localDescription.sdp
        offer = parse_offer(sdp, 8)
        assert SessionDescription.parse is not real_parse
        assert sdp in aiortc_hooks._PARSED_OFFERS
        await server.setRemoteDescription(offer.description)
        assert sdp not in aiortc_hooks._PARSED_OFFERS  # aiortc took it from there
        assert parses == [sdp]  # one parse for both
    finally:
        await client.close()
        await server.close()


async def test_video_that_falls_behind_is_shed_until_a_keyframe_and_audio_is_not():
    transceiver, connections = await negotiated_video_transceiver()
    try:
        asked = []
        forwarders = {
            kind: PacketForwarder(
                transceiver.sender, kind, LatencyHistogram(), lambda: asked.append(1)
            )
            for kind in ("video", "audio")
        }
        for forwarder in forwarders.values():
            forwarder.start(transceiver._codecs[0], transceiver._codecs)
        history = PacketHistory()
        for number in range(6):  # 100 ms apart, the loop stalled: the backlog grows old
            packet = vp8_packet(history, number, keyframe=number == 0)
            packet.arrival = number * 0.1
            for forwarder in forwarders.values():
                forwarder.push(packet)
        video, audio = forwarders["video"], forwarders["audio"]
        assert len(video._queue) == 3 and video.dropped == 3  # 0.0-0.2 queued, the rest shed
        assert asked == [1]  # and a keyframe asked for, once
        assert len(audio._queue) == 6 and audio.dropped == 0
        for forwarder in forwarders.values():
            forwarder.stop()
    finally:
        for pc in connections:
            await pc.close()

"""Forwarding encoded frames: keyframes for late joiners, PLI, overflow recovery, codec fallback."""

from __future__ import annotations

import asyncio
import time

import aiortc.clock
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

from server.client import RoomClient
from server.media import aiortc_hooks
from server.media.aiortc_hooks import AiortcInternalsChanged, check_aiortc_internals
from server.media.encoded import EncodedFrame, is_keyframe
from server.media.publication import EncodedSubscription
from server.media.slot import MAX_QUEUED, Slot
from tests.support.media import COLOURS, TONES, ColourTrack, ToneTrack, identify_video

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


class FakeSource:
    """Stands in for a Publication on the slot's side of the interface."""

    def __init__(self) -> None:
        self.forwardable, self.mime_type, self.kind = True, "video/vp8", "video"
        self.peer_id, self.source = "fake", "camera"
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def subscribe_encoded(self, sink, on_ended=None):
        return EncodedSubscription(self, sink, on_ended)

    def _unsubscribe(self, subscription) -> None:
        pass


def frame(number: int, keyframe: bool = False) -> EncodedFrame:
    return EncodedFrame(bytes([0 if keyframe else 1]) + bytes(100), number * 3000, 90000, keyframe)


async def test_an_overflowing_slot_drops_and_waits_for_a_keyframe():
    transceiver, connections = await negotiated_video_transceiver()
    try:
        slot = Slot(transceiver, forwarding=True)
        source = FakeSource()
        slot.attach(source)
        assert source.keyframe_requests == 1  # a new subscriber asks for a keyframe
        slot.push(frame(0))  # a delta frame before any keyframe: useless, dropped
        slot.push(frame(1, keyframe=True))
        for n in range(2, 2 + MAX_QUEUED["video"]):  # the sender stalls: the queue fills up
            slot.push(frame(n))
        assert slot.dropped > 0 and source.keyframe_requests == 2
        slot.push(frame(100))  # deltas after the gap would smear: still dropped
        slot.push(frame(101, keyframe=True))
        slot.push(frame(102))
        first = await slot.recv()
        assert bytes(first)[0] == 0, "after an overflow the slot restarts on a keyframe"
        second = await slot.recv()
        assert second.pts - first.pts == 3000  # timeline continuous across the gap
        slot.close()
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


def test_a_missing_aiortc_internal_fails_loudly(monkeypatch):
    def keyframe_with_new_signature(self, urgent: bool) -> None: ...

    monkeypatch.setattr(RTCRtpSender, "_send_keyframe", keyframe_with_new_signature)
    with pytest.raises(AiortcInternalsChanged, match=r"_send_keyframe"):
        check_aiortc_internals()


def test_vp8_and_h264_keyframes_are_recognised():
    assert is_keyframe("video/VP8", b"\x10\x02\x00\x9d\x01\x2a")
    assert not is_keyframe("video/VP8", b"\x11\x02\x00")
    assert is_keyframe("video/H264", b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x65\x88")
    assert not is_keyframe("video/H264", b"\x00\x00\x00\x01\x41\x9a")
    assert is_keyframe("audio/opus", b"\x78")


def test_the_fast_clock_reads_the_same_clock_as_aiortcs():
    before_ntp, before_ms = aiortc_hooks._current_ntp_time(), aiortc_hooks._current_ms()
    reference_ntp, reference_ms = (
        aiortc.clock.datetime_to_ntp(aiortc.clock.current_datetime()),
        (int((aiortc.clock.current_datetime() - aiortc.clock.NTP_EPOCH).total_seconds() * 1000)),
    )
    assert abs(reference_ntp - before_ntp) / 2**32 < 0.05
    assert abs(reference_ms - before_ms) < 50


@pytest.mark.parametrize("audio_level", [None, 38])
def test_the_lean_sender_packs_exactly_what_aiortc_serializes(audio_level):
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
                RTCRtpHeaderExtensionParameters(
                    id=4, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                ),
            ]
        )
    )
    values = HeaderExtensions(
        mid="2",
        abs_send_time=0x123456,
        audio_level=None if audio_level is None else (False, -audio_level),
    )
    block = aiortc_hooks.extension_block(extensions_map, values)
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
        assert aiortc_hooks.rtp_packet_bytes(packet, block) == packet.serialize(extensions_map)
    assert aiortc_hooks.extension_block(HeaderExtensionsMap(), values) == b""

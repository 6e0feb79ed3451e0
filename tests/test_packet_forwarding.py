"""Packet forwarding as a subscriber's RTP stack sees it: continuity across source switches,
NACKs answered from the server's history, loss on a downlink and on an uplink."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass

import pytest
from aiortc.rtp import RtpPacket, is_rtcp

from server.client import RoomClient
from server.media.rtp_rewrite import starts_keyframe
from tests.support.media import COLOURS, TONES, ColourTrack, ToneTrack, identify_video
from tests.support.polling import eventually
from tests.test_forwarding import joined, room_media

pytestmark = pytest.mark.media


@dataclass(frozen=True)
class Received:
    at: float
    ssrc: int
    sequence_number: int
    timestamp: int
    payload_type: int
    payload: bytes


class RecordingClient(RoomClient):
    """Records every raw RTP packet its receivers get, per mid (before aiortc sees them).

    ``drop(mid, packet)`` decides which packets are lost on the way in (their
    retransmissions included); aiortc's own NACK generator then asks for them.
    """

    def __init__(self, *args, drop=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.packets: dict[str, list[Received]] = {}
        self.retransmitted: dict[str, list[int]] = {}  # original sequence numbers via RTX
        self._drop = drop
        self._rtx_types: set[int] = set()

    async def _drain(self, track) -> None:
        transceiver = next(t for t in self._pc.getTransceivers() if t.receiver.track is track)
        mid, receiver = transceiver.mid, transceiver.receiver
        self._rtx_types |= {
            c.payloadType for c in transceiver._codecs if c.mimeType.lower().endswith("/rtx")
        }
        packets = self.packets.setdefault(mid, [])
        retransmitted = self.retransmitted.setdefault(mid, [])
        handle = receiver._handle_rtp_packet

        async def record(packet: RtpPacket, arrival_time_ms: int) -> None:
            if self._drop is not None and self._drop(mid, packet):
                return
            if packet.payload_type in self._rtx_types:
                retransmitted.append(int.from_bytes(packet.payload[:2], "big"))
            else:
                packets.append(
                    Received(
                        time.monotonic(),
                        packet.ssrc,
                        packet.sequence_number,
                        packet.timestamp,
                        packet.payload_type,
                        packet.payload,
                    )
                )
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = record
        await super()._drain(track)


def assert_one_continuous_stream(packets: list[Received], kind: str) -> None:
    """One SSRC, one payload type, no sequence gaps, timestamps never going backwards."""
    assert len({p.ssrc for p in packets}) == 1, "one SSRC per slot"
    assert len({p.payload_type for p in packets}) == 1
    ordered = sorted(packets, key=lambda p: p.at)
    seqs = {p.sequence_number for p in ordered}
    first = ordered[0].sequence_number
    span = (ordered[-1].sequence_number - first) % 65536 + 1
    missing = [s for s in range(first, first + span) if s % 65536 not in seqs]
    assert not missing, f"{kind}: sequence numbers missing: {missing[:10]}"
    for a, b in itertools.pairwise(ordered):
        if (b.sequence_number - a.sequence_number) % 65536 == 1:
            assert (b.timestamp - a.timestamp) % 2**32 < 2**31, f"{kind}: timestamp went back"


def switch_point(packets: list[Received]) -> int:
    """Index of the first packet after the longest silence (where the source changed)."""
    gaps = [b.at - a.at for a, b in itertools.pairwise(packets)]
    return gaps.index(max(gaps)) + 1


async def test_a_slot_stays_one_stream_across_a_change_of_source(relay_server, room):
    name = room()
    first = await joined(relay_server, name, 0)
    subscriber = await joined(relay_server, name, 3, RecordingClient, publish=False)
    second = None
    try:
        await subscriber.wait_for_media([first.peer_id])
        video_mid = subscriber.mid_of(first.peer_id, "video")
        audio_mid = subscriber.mid_of(first.peer_id, "audio")
        await asyncio.sleep(1.5)
        await first.close()  # its slots fall idle...
        await asyncio.sleep(0.5)
        second = await joined(relay_server, name, 1)  # ...and carry the next publisher
        await subscriber.wait_for_media([second.peer_id])
        assert subscriber.mid_of(second.peer_id, "video") == video_mid
        assert subscriber.mid_of(second.peer_id, "audio") == audio_mid
        assert await identify_video(subscriber.subscribe(second.peer_id, "video")) == COLOURS[1]
        await asyncio.sleep(1)

        video, audio = subscriber.packets[video_mid], subscriber.packets[audio_mid]
        assert_one_continuous_stream(video, "video")
        assert_one_continuous_stream(audio, "audio")
        assert starts_keyframe("video/vp8", video[0].payload), "the stream starts on a keyframe"
        after = video[switch_point(video)]
        assert starts_keyframe("video/vp8", after.payload), "a switch lands on a keyframe"
        assert after.at - video[switch_point(video) - 1].at > 0.5  # it really was the switch
        details = room_media(relay_server, name)[subscriber.peer_id]["slot_details"]
        assert details[video_mid]["switches"] >= 1
    finally:
        for client in (subscriber, first, second):
            if client is not None:
                await client.close()


async def test_a_subscribers_nacks_are_answered_from_the_servers_history(relay_server, room):
    dropped: list[int] = []

    def drop(mid: str, packet: RtpPacket) -> bool:
        # Every 5th video packet is lost the first time it comes.
        lose = (
            mid == video_mid
            and packet.payload_type == video_type
            and packet.sequence_number % 5 == 3
            and packet.sequence_number not in dropped
        )
        if lose:
            dropped.append(packet.sequence_number)
        return lose

    video_mid = video_type = None
    name = room()
    publisher = await joined(relay_server, name, 0)
    subscriber = await joined(relay_server, name, 1, RecordingClient, publish=False, drop=drop)
    try:
        await subscriber.wait_for_media([publisher.peer_id])
        mid = subscriber.mid_of(publisher.peer_id, "video")
        await eventually(lambda: subscriber.packets.get(mid))
        video_type = subscriber.packets[mid][0].payload_type
        video_mid = mid
        await eventually(lambda: len(dropped) >= 13, timeout=30)
        asked = dropped[:10]

        def recovered():
            received = set(subscriber.retransmitted[mid])
            received |= {p.sequence_number for p in subscriber.packets[mid]}
            return [s for s in asked if s in received]

        await eventually(lambda: len(recovered()) >= 9, timeout=10)  # aiortc gives up on a few
        assert subscriber.retransmitted[mid], "answered with RTX, as negotiated"
        details = room_media(relay_server, name)[subscriber.peer_id]["slot_details"][mid]
        assert details["retransmitted"] >= len(recovered())
        assert await identify_video(subscriber.subscribe(publisher.peer_id, "video")) == COLOURS[0]
    finally:
        await subscriber.close()
        await publisher.close()


async def frames_decoded(client: RoomClient, peer_id: str, seconds: float) -> tuple[int, float]:
    """Video frames decoded from ``peer_id`` in ``seconds``, and the longest freeze."""
    track = client.subscribe(peer_id, "video")
    count, last, freeze = 0, time.monotonic(), 0.0
    end = last + seconds
    while (now := time.monotonic()) < end:
        try:
            await asyncio.wait_for(track.recv(), max(0.01, end - now))
        except TimeoutError:
            break
        now = time.monotonic()
        count, freeze, last = count + 1, max(freeze, now - last), now
    return count, max(freeze, time.monotonic() - last)


def lossy(rate: float, seed: int):
    chance = random.Random(seed)
    return lambda mid, packet: chance.random() < rate


async def test_loss_on_one_downlink_is_repaired_and_harms_nobody_else(relay_server, room):
    name = room()
    publisher = await joined(relay_server, name, 0)
    clean = await joined(relay_server, name, 1, RecordingClient, publish=False)
    lossy_client = await joined(
        relay_server, name, 2, RecordingClient, publish=False, drop=lossy(0.05, 11)
    )
    try:
        for client in (clean, lossy_client):
            await client.wait_for_media([publisher.peer_id])
        await asyncio.sleep(1)
        (good, _), (repaired, freeze) = await asyncio.gather(
            frames_decoded(clean, publisher.peer_id, 4),
            frames_decoded(lossy_client, publisher.peer_id, 4),
        )
        assert good > 20
        assert repaired >= 0.7 * good, f"{repaired} frames with 5% loss, {good} without"
        assert freeze < 1.0, f"froze for {freeze:.2f}s"
        mid = lossy_client.mid_of(publisher.peer_id, "video")
        assert lossy_client.retransmitted[mid], "losses were repaired by retransmission"
        assert (
            await identify_video(lossy_client.subscribe(publisher.peer_id, "video")) == (COLOURS[0])
        )
    finally:
        for client in (publisher, clean, lossy_client):
            await client.close()


async def test_loss_on_a_publishers_uplink_is_repaired_for_every_subscriber(relay_server, room):
    name = room()
    publisher = RoomClient(relay_server.url, nickname="lossy")
    await publisher.connect()
    await publisher.join(name, audio=ToneTrack(TONES[0]), video=ColourTrack(COLOURS[0]))
    await publisher.wait_connected()
    for transceiver in publisher._pc.getTransceivers():  # 5% of its RTP never arrives
        transport = transceiver.sender.transport
        if not getattr(transport, "_lossy", False):
            transport._lossy, send, chance = True, transport._send_rtp, random.Random(5)

            async def maybe_send(data: bytes, send=send, chance=chance) -> None:
                if is_rtcp(data) or chance.random() >= 0.05:
                    await send(data)

            transport._send_rtp = maybe_send
    subscribers = [await joined(relay_server, name, i, publish=False) for i in (1, 2)]
    try:
        for client in subscribers:
            await client.wait_for_media([publisher.peer_id])
        await asyncio.sleep(1)
        results = await asyncio.gather(
            *(frames_decoded(client, publisher.peer_id, 4) for client in subscribers)
        )
        for count, freeze in results:
            assert count > 20, f"{count} frames in 4 s with 5% uplink loss"
            assert freeze < 1.0, f"froze for {freeze:.2f}s"
        for client in subscribers:
            assert await identify_video(client.subscribe(publisher.peer_id, "video")) == COLOURS[0]
    finally:
        for client in (publisher, *subscribers):
            await client.close()

"""Load generator for relay_bench.py (run as ``python -m bench.load_client``).

Publishers send pre-encoded clips (no encoding cost). Subscribers count the encoded
frames they receive per stream from the SRTP packets' clear headers, read straight
from their sockets, without decrypting or decoding them (aiortc would otherwise
decode every stream); one frame in eight is decrypted and identified by its hash (it
must arrive byte-identical), and a few "probe" subscribers decode to check the
picture and measure latency. Several of these processes can share one room (each
runs some of the publishers and subscribers). A process prints ``READY`` when the
room is set up, waits for ``GO`` on stdin, so that all of them measure the same
window, measures for ``--duration`` seconds and prints one JSON line of raw results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver
from aiortc.codecs import CODECS
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtp import RtpPacket, is_rtcp

from bench.synthetic import (
    ClipTrack,
    EncodedClip,
    frame_digest,
    is_keyframe,
    load_clip,
    read_picture,
)
from server.client import RoomClient
from server.media.aiortc_hooks import (
    install_aiortc_hooks,
    route_keyframe_requests,
    tap_encoded_frames,
)

logger = logging.getLogger("load_client")

# Subscribers here are aiortc peers, so the server's answer keeps aiortc's payload types.
VP8_PAYLOAD_TYPE = next(c.payloadType for c in CODECS["video"] if c.mimeType == "video/VP8")
IDENTIFY_EVERY = 8  # frames: the share of a counted stream decrypted and identified
POLL_INTERVAL = 0.004  # seconds between two reads of the counted streams' sockets
SOCKET_BUFFER = 1 << 20  # bytes: room for a tick's packets when the process is busy


def publisher_name(identity: int) -> str:
    return f"pub{identity}"


def identity_of(nickname: str | None) -> int | None:
    if nickname and nickname.startswith("pub") and nickname[3:].isdigit():
        return int(nickname[3:])
    return None


class Catalogue:
    """Which publisher and clip frame an encoded frame is, by its bytes.

    Every load process knows every publisher's clip (they are deterministic), so a
    subscriber can identify frames from publishers running in another process; send
    times, for latency, only exist for the publishers of this process.
    """

    def __init__(self, clips: list[EncodedClip]) -> None:
        self._frames: dict[bytes, tuple[int, int]] = {}
        for clip in clips:
            for digest, index in clip.digest_index().items():
                self._frames[digest] = (clip.identity, index)
        self.tracks: dict[int, ClipTrack] = {}  # local publishers by identity

    def lookup(self, data: bytes) -> tuple[int, int] | None:
        return self._frames.get(frame_digest(data))


class FrameCounter:
    """One stream's VP8 frames, reassembled from RTP payloads between marker bits.

    aiortc's receive path (jitter buffer, NACK and bandwidth estimation, all in
    Python) costs the load generator more CPU per stream than the server spends
    forwarding it, which on a 2-core machine would starve the server being
    measured. On loopback, packets arrive in order, so frames are simply the
    payloads between marker bits. Packet loss shows up as unidentified frames.
    """

    def __init__(self, on_frame: Callable[[bytes], None]) -> None:
        self._on_frame = on_frame
        self._parts: list[bytes] = []
        self._timestamp: int | None = None

    def take_over(self, receiver: RTCRtpReceiver) -> None:
        """Count what aiortc routes to ``receiver`` instead of decoding it."""

        async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.packet(packet.payload_type, packet.marker, packet.timestamp, packet.payload)

        receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]

    def plain_rtp(self, data: bytes) -> None:
        """A decrypted RTP packet (RFC 3550 5.1: CSRCs, extension and padding skipped)."""
        first = data[0]
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
        end = len(data) - data[-1] if first & 0x20 else len(data)
        marker_and_type = data[1]
        self.packet(
            marker_and_type & 0x7F,
            bool(marker_and_type & 0x80),
            int.from_bytes(data[4:8], "big"),
            data[start:end],
        )

    def packet(self, payload_type: int, marker: bool, timestamp: int, payload: bytes) -> None:
        if payload_type != VP8_PAYLOAD_TYPE or not payload:
            return  # RTX, padding
        if timestamp != self._timestamp:
            self._parts.clear()
            self._timestamp = timestamp
        self._parts.append(vp8_depayload(payload))
        if marker:
            self._on_frame(b"".join(self._parts))
            self._parts.clear()


class SocketStream:
    """One subscribed stream's SRTP packets, read at the socket.

    SRTP encrypts the payload only (RFC 3711, 3.1): sequence number, timestamp and
    marker bit are in the clear, so frames are counted and gaps in the sequence
    (lost packets) seen without decrypting. One frame in ``IDENTIFY_EVERY`` is
    decrypted and handed to the stream's ``FrameCounter``, which identifies it by its
    bytes; the others only count.
    """

    def __init__(self, frames: FrameCounter, on_unread_frame: Callable[[], None]) -> None:
        self._frames = frames
        self._on_unread_frame = on_unread_frame
        self._sequence: int | None = None
        self._timestamp = b""
        self._seen = 0  # frames, by timestamp
        self._reading = False
        self.lost = 0

    def datagram(self, data: bytes, srtp: pylibsrtp.Session) -> None:
        if data[1] & 0x7F != VP8_PAYLOAD_TYPE:
            return  # RTX, padding
        sequence = int.from_bytes(data[2:4], "big")
        if self._sequence is not None:
            gap = (sequence - self._sequence - 1) & 0xFFFF
            if gap >= 0x8000:
                return  # late or repeated
            self.lost += gap
        self._sequence = sequence
        if data[4:8] != self._timestamp:
            self._timestamp = data[4:8]
            self._reading = self._seen % IDENTIFY_EVERY == 0
            self._seen += 1
        if self._reading:
            with contextlib.suppress(pylibsrtp.Error):  # a replay, a corrupt packet
                self._frames.plain_rtp(srtp.unprotect(data))
        elif data[1] & 0x80:
            self._on_unread_frame()


class SocketPoller:
    """Reads the load process's media sockets every ``POLL_INTERVAL``, all in one pass.

    asyncio reads one datagram per event-loop pass, and aioice then aiortc's DTLS task
    and RTP parser handle each in Python: with hundreds of streams the load clients
    cost more CPU than the server forwarding to them, and a 2-core machine could not
    show what a second media worker adds (``relay_bench.py --workers``). Waking a few
    hundred times a second and draining every socket costs the loop one pass per tick
    instead of one per datagram (two rooms of 14, two media workers: the load clients
    took 53% of a core instead of 78-81%); arrival times are late by up to one interval.
    """

    def __init__(self) -> None:
        self._drains: list[Callable[[], bool]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, drain: Callable[[], bool]) -> None:
        """``drain`` reads what its socket holds; it returns False once the socket closed."""
        self._drains.append(drain)
        if self._timer is None:
            self._tick()

    def _tick(self) -> None:
        self._drains = [drain for drain in self._drains if drain()]
        self._timer = asyncio.get_running_loop().call_later(POLL_INTERVAL, self._tick)


def count_at_the_socket(
    pc: RTCPeerConnection, streams: dict[RTCRtpReceiver, SocketStream], poller: SocketPoller
) -> None:
    """Take the connection's socket from asyncio and let ``poller`` read it: each counted
    stream's SRTP packets go to its ``SocketStream`` once aiortc has routed the stream's
    first packets (so that its SSRC is known); everything else (STUN, DTLS, RTCP,
    probes that decode) goes to aioice and aiortc as before.

    This uses private asyncio, aioice and aiortc attributes: a benchmark tool's shortcut,
    checked by the load client's test (tests/test_bench_tools.py).
    """
    dtls = next(
        t.receiver.transport for t in pc.getTransceivers() if t.receiver.transport is not None
    )  # bundled: one transport for every stream
    routed = dtls._rtp_router.ssrc_table
    srtp = dtls._rx_srtp
    protocol = dtls.transport._connection._nominated[1].protocol  # the pair media flows on
    sock = protocol.transport._sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)  # a tick's burst

    def drain() -> bool:
        while True:
            try:
                data, address = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as error:  # closed with its connection, or an ICMP error
                if sock.fileno() == -1:
                    return False
                protocol.error_received(error)
                return True
            if 127 < data[0] < 192 and not is_rtcp(data):
                stream = streams.get(routed.get(int.from_bytes(data[8:12], "big")))
                if stream is not None:
                    stream.datagram(data, srtp)
                    continue
            protocol.datagram_received(data, address)

    asyncio.get_running_loop()._remove_reader(sock.fileno())  # type: ignore[attr-defined]
    poller.add(drain)


class BenchClient(RoomClient):
    """A participant that publishes a clip as-is and counts, not decodes, what it receives."""

    def __init__(self, url: str, nickname: str, catalogue: Catalogue, *, probe: bool) -> None:
        super().__init__(url, nickname=nickname, answer_timeout=60)
        self.catalogue = catalogue
        self.probe = probe
        self.clip_track: ClipTrack | None = None
        self.frames: dict[str, list[float]] = defaultdict(list)  # mid -> arrival times
        self.keyframe_first: dict[str, bool] = {}
        self.mismatched = 0
        self.looked_up = 0  # frames identified by their bytes (one in IDENTIFY_EVERY at the socket)
        self.unidentified = 0
        self.latencies: list[float] = []  # publisher send -> encoded frame arrival
        self.decoded_latencies: list[float] = []  # publisher send -> decoded picture (probes)
        self.decoded_ok = 0
        self.decoded_wrong = 0
        self.measuring = False
        self.streams: dict[RTCRtpReceiver, SocketStream] = {}
        self._readers: list[asyncio.Task[None]] = []

    def _ensure_connection(self) -> RTCPeerConnection:
        fresh = self._pc is None
        pc = super()._ensure_connection()
        if fresh:
            pc.remove_all_listeners("track")  # count frames instead of decoding them
            pc.on("track", self._on_remote_track)
        return pc

    def _add_published(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        """The clip is sent as-is (no relay proxy); a PLI jumps to its next keyframe."""
        assert isinstance(track, ClipTrack)
        transceiver = pc.addTransceiver(track, direction="sendonly")
        route_keyframe_requests(transceiver.sender, track.request_keyframe)

    def _on_remote_track(self, track: MediaStreamTrack) -> None:
        assert self._pc is not None
        transceiver = next(t for t in self._pc.getTransceivers() if t.receiver.track is track)
        if track.kind != "video":
            return
        mid = transceiver.mid

        def on_frame(data: bytes) -> None:
            self._on_frame(mid, data)

        if self.probe:  # aiortc's full receive path: jitter buffer, NACK, decoding
            tap = tap_encoded_frames(transceiver.receiver, lambda _, frame: on_frame(frame.data))
            tap.decoding = True
            self._readers.append(asyncio.ensure_future(self._read_decoded(mid, track)))
        else:
            counter = FrameCounter(on_frame)
            counter.take_over(transceiver.receiver)
            self.streams[transceiver.receiver] = SocketStream(counter, lambda: self._arrived(mid))

    def count_at_the_socket(self, poller: SocketPoller) -> None:
        """Once connected: counted streams skip aiortc's receive path (see the function)."""
        if self._pc is not None and self.streams:
            count_at_the_socket(self._pc, self.streams, poller)

    def _arrived(self, mid: str) -> None:
        if self.measuring:
            self.frames[mid].append(time.time())

    def _on_frame(self, mid: str, data: bytes) -> None:
        """A frame whose bytes we have: counted, then identified."""
        now = time.time()
        if not self.frames[mid] and mid not in self.keyframe_first:
            self.keyframe_first[mid] = is_keyframe("video/vp8", data)
        self._arrived(mid)
        self.looked_up += self.measuring
        found = self.catalogue.lookup(data)
        if found is None:
            self.unidentified += self.measuring
            return
        identity, index = found
        if identity != self.slot_identity(mid):
            self.mismatched += self.measuring
        elif self.measuring and (track := self.catalogue.tracks.get(identity)):
            sent = track.sent_at.get(index)
            if sent is not None:
                self.latencies.append(now - sent)

    def slot_identity(self, mid: str) -> int | None:
        """The publisher identity the server says this slot carries."""
        owner = self._mid_owner.get(mid)
        peer = self.peers.get(owner) if owner else None
        return identity_of(peer.nickname if peer else None)

    def publishers_seen(self) -> set[str]:
        return {
            peer_id
            for peer_id, peer in self.peers.items()
            if identity_of(peer.nickname) is not None
        }

    async def _read_decoded(self, mid: str, track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            identity, number = read_picture(frame)
            expected = self.slot_identity(mid)
            if not self.measuring or expected is None:
                continue
            if expected != identity:
                self.decoded_wrong += 1
                continue
            self.decoded_ok += 1
            local = self.catalogue.tracks.get(identity)
            if local is not None and (sent := local.sent_at.get(number)) is not None:
                self.decoded_latencies.append(time.time() - sent)

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await super().close()


async def join(
    url: str,
    room: str,
    name: str,
    clip: EncodedClip | None,
    probe: bool,
    *,
    catalogue: Catalogue,
) -> BenchClient:
    client = BenchClient(url, name, catalogue, probe=probe)
    await client.connect()
    if clip is not None:
        client.clip_track = catalogue.tracks[clip.identity] = ClipTrack(clip)
    await client.join(room, video=client.clip_track)
    return client


def ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


async def time_to_first_frame(
    url: str, room: str, name: str, catalogue: Catalogue, publishers: int
) -> dict:
    """A late joiner: seconds from join() until it has a frame from every publisher."""
    started = time.monotonic()
    client = await join(url, room, name, None, False, catalogue=catalogue)
    client.measuring = True
    try:
        while len([m for m, f in client.frames.items() if f]) < publishers:
            await asyncio.sleep(0.01)
        return {
            "seconds": time.monotonic() - started,
            "keyframe_first": all(client.keyframe_first.values()),
        }
    finally:
        await client.close()


def lost_packets(clients: list[BenchClient]) -> int:
    return sum(stream.lost for client in clients for stream in client.streams.values())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    first, last = (int(part) for part in args.publishers_here.split(":"))
    catalogue = Catalogue([load_clip(i) for i in range(args.publishers)])
    specs = [(publisher_name(i), load_clip(i), False) for i in range(first, last)] + [
        (f"{args.name}{i}", None, i < args.probes) for i in range(args.subscribers)
    ]
    clients: list[BenchClient] = []
    poller = SocketPoller()
    for start in range(0, len(specs), 8):
        clients += await asyncio.gather(
            *(
                join(args.url, args.room, *spec, catalogue=catalogue)
                for spec in specs[start : start + 8]
            )
        )
    for client in clients:  # every publisher, wherever it runs, reaches every client
        wanted = args.publishers - (client.clip_track is not None)
        await client.wait_until(lambda c=client, w=wanted: len(c.publishers_seen()) >= w, 180)
        await client.wait_for_media(client.publishers_seen(), kinds=["video"], timeout=180)
        await client.wait_connected(timeout=180)
        client.count_at_the_socket(poller)
    # Late joiners arrive while everyone is still here (other load processes leave as soon
    # as their measuring window ends).
    late = [
        await time_to_first_frame(
            args.url, args.room, f"{args.name}late{i}", catalogue, args.publishers
        )
        for i in range(args.late_joiners)
    ]
    await asyncio.sleep(args.warmup)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "GO"

    for client in clients:
        client.measuring = True
    lost_before, started = lost_packets(clients), time.time()
    await asyncio.sleep(args.duration)
    window = time.time() - started
    for client in clients:
        client.measuring = False

    fps = [
        len(arrivals) / window
        for client in clients
        for mid, arrivals in client.frames.items()
        if client.slot_identity(mid) is not None
    ]
    result = {
        "fps": [round(value, 3) for value in fps],
        "identity_mismatched": sum(c.mismatched for c in clients),
        "frames_looked_up": sum(c.looked_up for c in clients),
        "unidentified_frames": sum(c.unidentified for c in clients),
        "lost_packets": lost_packets(clients) - lost_before,
        "probe_decoded_ok": sum(c.decoded_ok for c in clients),
        "probe_decoded_wrong": sum(c.decoded_wrong for c in clients),
        "arrival_latency_ms": [ms(v) for c in clients for v in c.latencies],
        "decoded_latency_ms": [ms(v) for c in clients for v in c.decoded_latencies],
        "late_join_s": [round(entry["seconds"], 3) for entry in late],
        "late_join_keyframe_first": all(entry["keyframe_first"] for entry in late),
    }
    for client in clients:
        await client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", default="bench")
    parser.add_argument("--publishers", type=int, default=2, help="publishers in the room")
    parser.add_argument(
        "--publishers-here", default=None, help="FIRST:END publishers run by this process"
    )
    parser.add_argument("--subscribers", type=int, default=8, help="subscribers of this process")
    parser.add_argument("--name", default="sub", help="subscriber nickname prefix")
    parser.add_argument("--probes", type=int, default=1, help="subscribers that also decode")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--late-joiners", type=int, default=2)
    args = parser.parse_args()
    args.publishers_here = args.publishers_here or f"0:{args.publishers}"
    logging.basicConfig(level=logging.WARNING)
    install_aiortc_hooks()  # clients keep ICE consent as browsers do (RFC 7675): see bench.soak
    result = asyncio.run(run(args))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

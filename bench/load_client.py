"""Load generator for relay_bench.py (run as ``python -m bench.load_client``).

Publishers and subscribers live together in this one separate process.

Publishers send pre-encoded clips (no encoding cost). Subscribers count the
encoded frames they receive per stream without decoding them (aiortc would
otherwise decode every stream), identify each frame by its hash when it
arrives byte-identical, and a few "probe" subscribers decode to check the
picture and measure latency. Prints ``READY`` when the room is set up, then
measures for ``--duration`` seconds and prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from collections import defaultdict
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection

from bench.synthetic import ClipTrack, EncodedClip, encode_clip, frame_digest, read_picture
from server.client import RoomClient
from server.media.aiortc_hooks import route_keyframe_requests, tap_encoded_frames
from server.media.encoded import is_keyframe

logger = logging.getLogger("load_client")


class Catalogue:
    """Which publisher and clip frame an encoded frame is, by its bytes."""

    def __init__(self) -> None:
        self._frames: dict[bytes, tuple[str, int]] = {}
        self.tracks: dict[str, ClipTrack] = {}

    def add(self, peer_id: str, track: ClipTrack) -> None:
        self.tracks[peer_id] = track
        for digest, index in track.clip.digest_index().items():
            self._frames[digest] = (peer_id, index)

    def lookup(self, data: bytes) -> tuple[str, int] | None:
        return self._frames.get(frame_digest(data))


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
        self.unidentified = 0
        self.latencies: list[float] = []  # publisher send -> encoded frame arrival
        self.decoded_latencies: list[float] = []  # publisher send -> decoded picture (probes)
        self.decoded_ok = 0
        self.decoded_wrong = 0
        self.measuring = False
        self._readers: list[asyncio.Task[None]] = []

    def _ensure_connection(self) -> RTCPeerConnection:
        fresh = self._pc is None
        pc = super()._ensure_connection()
        if fresh:
            pc.remove_all_listeners("track")  # count frames instead of decoding them
            pc.on("track", self._on_remote_track)
            if self.clip_track is not None:  # sent as-is; a PLI jumps to its next keyframe
                transceiver = pc.addTransceiver(self.clip_track, direction="sendonly")
                route_keyframe_requests(transceiver.sender, self.clip_track.request_keyframe)
        return pc

    def _on_remote_track(self, track: MediaStreamTrack) -> None:
        assert self._pc is not None
        transceiver = next(t for t in self._pc.getTransceivers() if t.receiver.track is track)
        if track.kind != "video":
            return
        mid = transceiver.mid
        tap = tap_encoded_frames(
            transceiver.receiver, lambda codec, frame: self._on_frame(mid, codec, frame)
        )
        if self.probe:
            tap.decoding = True
            self._readers.append(asyncio.ensure_future(self._read_decoded(mid, track)))

    def _on_frame(self, mid: str, codec: Any, frame: Any) -> None:
        now = time.time()
        arrivals = self.frames[mid]
        if not arrivals and mid not in self.keyframe_first:
            self.keyframe_first[mid] = is_keyframe(codec.mimeType, frame.data)
        if self.measuring:
            arrivals.append(now)
        found = self.catalogue.lookup(frame.data)
        if found is None:
            self.unidentified += self.measuring
            return
        publisher, index = found
        if publisher != self._mid_owner.get(mid):
            self.mismatched += self.measuring
        elif self.measuring and (sent := self.catalogue.tracks[publisher].sent_at.get(index)):
            self.latencies.append(now - sent)

    async def _read_decoded(self, mid: str, track: MediaStreamTrack) -> None:
        identities = {peer: t.clip.identity for peer, t in self.catalogue.tracks.items()}
        while True:
            frame = await track.recv()
            identity, number = read_picture(frame)
            owner = self._mid_owner.get(mid)
            if not self.measuring or owner is None:
                continue
            if identities.get(owner) == identity:
                self.decoded_ok += 1
                sent = self.catalogue.tracks[owner].sent_at.get(number)
                if sent is not None:
                    self.decoded_latencies.append(time.time() - sent)
            else:
                self.decoded_wrong += 1

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
        client.clip_track = ClipTrack(clip)
    await client.join(room)
    if clip is not None:
        assert client.peer_id is not None and client.clip_track is not None
        catalogue.add(client.peer_id, client.clip_track)
    return client


def ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def time_to_first_frame(url: str, room: str, catalogue: Catalogue, publishers: int) -> dict:
    """A late joiner: seconds from join() until it has a frame from every publisher."""
    started = time.monotonic()
    client = await join(url, room, "late-joiner", None, False, catalogue=catalogue)
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    catalogue = Catalogue()
    clips = [encode_clip(i) for i in range(args.publishers)]
    clients: list[BenchClient] = []
    batch = 8
    specs = [(f"pub{i}", clips[i], False) for i in range(args.publishers)] + [
        (f"sub{i}", None, i < args.probes) for i in range(args.subscribers)
    ]
    for start in range(0, len(specs), batch):
        clients += await asyncio.gather(
            *(
                join(args.url, args.room, *spec, catalogue=catalogue)
                for spec in specs[start : start + batch]
            )
        )
    expected = {c.peer_id for c in clients if c.clip_track is not None}
    for client in clients:
        others = expected - {client.peer_id}
        await client.wait_for_media(others, kinds=["video"], timeout=120)
        await client.wait_connected(timeout=120)
    await asyncio.sleep(args.warmup)
    print("READY", flush=True)

    for client in clients:
        client.measuring = True
    started = time.time()
    await asyncio.sleep(args.duration)
    window = time.time() - started
    for client in clients:
        client.measuring = False

    fps = [
        len(arrivals) / window
        for client in clients
        for mid, arrivals in client.frames.items()
        if client._mid_owner.get(mid) in expected
    ]
    late = [
        await time_to_first_frame(args.url, args.room, catalogue, args.publishers)
        for _ in range(args.late_joiners)
    ]
    latencies = [value for client in clients for value in client.latencies]
    decoded = [value for client in clients for value in client.decoded_latencies]
    result = {
        "streams": len(fps),
        "fps_median": statistics.median(fps) if fps else 0.0,
        "fps_min": min(fps) if fps else 0.0,
        "fps_p10": percentile(fps, 0.10),
        "identity_mismatched": sum(c.mismatched for c in clients),
        "unidentified_frames": sum(c.unidentified for c in clients),
        "probe_decoded_ok": sum(c.decoded_ok for c in clients),
        "probe_decoded_wrong": sum(c.decoded_wrong for c in clients),
        "arrival_latency_ms_median": ms(statistics.median(latencies)) if latencies else None,
        "arrival_latency_ms_p95": ms(percentile(latencies, 0.95)) if latencies else None,
        "decoded_latency_ms_median": ms(statistics.median(decoded)) if decoded else None,
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
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=8)
    parser.add_argument("--probes", type=int, default=1, help="subscribers that also decode")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--late-joiners", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run(args))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

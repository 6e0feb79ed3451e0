"""What the server's hop adds to mouth-to-ear and glass-to-glass delay, in one run.

The same kind of aiortc sender and receiver are connected twice at the same
time: directly (two peer connections in this process) and through a roomrelay
server (a publisher and a subscriber in its room). The sender's video frames
carry a counter in their pixels; its audio is silence with a short tone burst
every half second. Each receiver decodes, reads the counter (or detects the
burst) and takes the time since that frame left the sending track. Both paths
include encoding, aiortc's receive jitter buffer and decoding; their difference
is the server's hop. Prints median and p95 per path and kind, the difference,
and the server's own forward-latency figure from ``/stats``.

    .venv/bin/python -m bench.latency_bench [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import statistics
import time
import urllib.request
from collections.abc import Callable

import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError
from av import AudioFrame, VideoFrame

from bench.relay_bench import Server
from server.client import RoomClient

logger = logging.getLogger("latency_bench")

WIDTH, HEIGHT, FPS = 160, 120, 15
BITS = 16  # counter bits drawn as a row of black/white blocks
AUDIO_RATE, AUDIO_PTIME = 48000, 0.02
BURST_EVERY = 0.5  # seconds between audio bursts
BURST_LENGTH = 0.06


class SendLog:
    """When each video frame number and each audio burst left its sending track."""

    def __init__(self) -> None:
        self.video: dict[int, float] = {}
        self.bursts: list[float] = []


class CounterVideo(MediaStreamTrack):
    """Frames whose pixels carry their number (paced at FPS)."""

    kind = "video"

    def __init__(self, log: SendLog) -> None:
        super().__init__()
        self._log = log
        self._number = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._number / FPS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        number = self._number % (1 << BITS)
        image = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
        block = WIDTH // BITS
        for bit in range(BITS):
            value = 255 if number >> bit & 1 else 0
            image[HEIGHT // 3 : 2 * HEIGHT // 3, bit * block : (bit + 1) * block] = value
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = int(self._number * 90000 / FPS), VIDEO_TIME_BASE
        self._log.video[number] = time.monotonic()
        self._number += 1
        return frame


def read_counter(frame: VideoFrame) -> int:
    gray = frame.to_ndarray(format="gray")
    block = gray.shape[1] // BITS
    band = gray[gray.shape[0] // 3 : 2 * gray.shape[0] // 3]
    number = 0
    for bit in range(BITS):
        if band[:, bit * block + 2 : (bit + 1) * block - 2].mean() > 128:
            number |= 1 << bit
    return number


class BurstAudio(MediaStreamTrack):
    """Silence with a 1 kHz burst every BURST_EVERY seconds (paced in real time)."""

    kind = "audio"

    def __init__(self, log: SendLog) -> None:
        super().__init__()
        self._log = log
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        per_frame = int(AUDIO_RATE * AUDIO_PTIME)
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._samples / AUDIO_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        position = (self._samples / AUDIO_RATE) % BURST_EVERY
        if position < BURST_LENGTH:
            if position < AUDIO_PTIME / 2:
                self._log.bursts.append(time.monotonic())
            n = np.arange(self._samples, self._samples + per_frame)
            wave = (0.5 * 32767 * np.sin(2 * np.pi * 1000 * n / AUDIO_RATE)).astype(np.int16)
        else:
            wave = np.zeros(per_frame, dtype=np.int16)
        frame = AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._samples += per_frame
        return frame


async def measure_video(track: MediaStreamTrack, log: SendLog, out: list[float]) -> None:
    while True:
        frame = await track.recv()
        received = time.monotonic()
        sent = log.video.get(read_counter(frame))
        if sent is not None and 0 <= received - sent < 5:
            out.append(received - sent)


async def measure_audio(track: MediaStreamTrack, log: SendLog, out: list[float]) -> None:
    loud = False
    while True:
        frame = await track.recv()
        received = time.monotonic()
        level = float(np.abs(frame.to_ndarray().astype(np.float64)).mean())
        if level > 2000 and not loud:
            sent = [t for t in log.bursts if t <= received]
            if sent and received - sent[-1] < BURST_EVERY:
                out.append(received - sent[-1])
        loud = level > 2000


async def direct_path(log: SendLog) -> tuple[MediaStreamTrack, MediaStreamTrack, Callable]:
    """A sender and a receiver peer connection, connected to each other directly."""
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(BurstAudio(log))
    sender.addTrack(CounterVideo(log))
    tracks: dict[str, MediaStreamTrack] = {}
    receiver.on("track", lambda track: tracks.__setitem__(track.kind, track))
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)

    async def close() -> None:
        await sender.close()
        await receiver.close()

    return tracks["audio"], tracks["video"], close


async def relayed_path(
    url: str, log: SendLog
) -> tuple[MediaStreamTrack, MediaStreamTrack, Callable]:
    """The same sender and receiver, as a publisher and a subscriber of one server room."""
    publisher, subscriber = RoomClient(url, nickname="sender"), RoomClient(url, nickname="viewer")
    await publisher.connect()
    await publisher.join("latency", audio=BurstAudio(log), video=CounterVideo(log))
    await publisher.wait_connected()
    await subscriber.connect()
    await subscriber.join("latency")
    await subscriber.wait_for_media([publisher.peer_id])

    async def close() -> None:
        await subscriber.close()
        await publisher.close()

    return (
        subscriber.subscribe(publisher.peer_id, "audio"),
        subscriber.subscribe(publisher.peer_id, "video"),
        close,
    )


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else float("nan"),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1)
        if ordered
        else float("nan"),
    }


async def run(url: str, seconds: float, warmup: float) -> dict[str, object]:
    direct_log, relayed_log = SendLog(), SendLog()
    direct = await direct_path(direct_log)
    relayed = await relayed_path(url, relayed_log)
    results: dict[str, dict[str, list[float]]] = {
        "direct": {"video": [], "audio": []},
        "relayed": {"video": [], "audio": []},
    }
    tasks = []
    for name, (audio, video, _), log in (
        ("direct", direct, direct_log),
        ("relayed", relayed, relayed_log),
    ):
        tasks.append(asyncio.create_task(measure_video(video, log, results[name]["video"])))
        tasks.append(asyncio.create_task(measure_audio(audio, log, results[name]["audio"])))
    await asyncio.sleep(warmup)
    for per_kind in results.values():
        for values in per_kind.values():
            values.clear()
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
            await task
    stats = json.loads(urllib.request.urlopen(url + "/stats", timeout=5).read())
    await relayed[2]()
    await direct[2]()
    report: dict[str, object] = {
        name: {kind: summary(values) for kind, values in per_kind.items()}
        for name, per_kind in results.items()
    }
    report["server_forward_latency"] = stats.get("forward_latency")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a short run (8 s)")
    args = parser.parse_args()
    seconds = 8.0 if args.quick else args.seconds
    logging.basicConfig(level=logging.WARNING)
    server = Server("forward")
    try:
        report = asyncio.run(run(server.url, seconds, warmup=3.0))
    finally:
        server.stop()
    for kind in ("video", "audio"):
        direct = report["direct"][kind]  # type: ignore[index]
        relayed = report["relayed"][kind]  # type: ignore[index]
        print(
            f"{kind}: direct p50 {direct['p50_ms']} ms p95 {direct['p95_ms']} ms "
            f"(n={direct['n']}); "
            f"through the server p50 {relayed['p50_ms']} ms p95 {relayed['p95_ms']} ms "
            f"(n={relayed['n']}); the hop adds p50 {relayed['p50_ms'] - direct['p50_ms']:+.1f} ms, "
            f"p95 {relayed['p95_ms'] - direct['p95_ms']:+.1f} ms"
        )
    print(f"server forward latency (arrival to send): {report['server_forward_latency']}")
    print("RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()

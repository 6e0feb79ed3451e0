"""What the lean RTP send loop saves: CPU per forwarded frame, aiortc's loop vs ours.

Every forwarded frame the server sends goes through an ``RTCRtpSender`` send loop.
aiortc's own ``_run_rtp`` rebuilds and serializes the header extensions for every
packet; ``use_lean_rtp_loop`` (``server/media/aiortc_hooks.py``) does that once per
frame. This benchmark sends the same pre-encoded VP8 streams (640x360, 15 fps)
over loopback with each loop in turn, alternating rounds, and measures the sending
process's CPU per frame. The receiver runs in a child process (so its cost is not
counted) and checks each frame's bytes: it reassembles frames without a jitter
buffer, so a packet the loopback socket buffer drops shows as an incomplete frame.

    .venv/bin/python -m bench.sender_bench [--streams 20] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time

from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.load_client import count_frames
from bench.synthetic import ClipTrack, frame_digest, load_clip
from server.media.aiortc_hooks import use_lean_rtp_loop

logger = logging.getLogger("sender_bench")
LOOPS = ("aiortc", "lean")


async def receive() -> None:
    """Child process: answer the offer on stdin, count frames until stdin closes."""
    known = set(load_clip(0).digest_index())
    received = {"frames": 0, "incomplete": 0}

    def on_frame(data: bytes) -> None:
        received["frames"] += 1
        received["incomplete"] += frame_digest(data) not in known

    pc = RTCPeerConnection()

    @pc.on("track")
    def on_track(track: object) -> None:
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
        count_frames(transceiver.receiver, on_frame)

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await pc.setRemoteDescription(RTCSessionDescription(**json.loads(await reader.readline())))
    await pc.setLocalDescription(await pc.createAnswer())
    answer = pc.localDescription
    sys.stdout.write(json.dumps({"sdp": answer.sdp, "type": answer.type}) + "\n")
    sys.stdout.flush()
    await reader.read()  # until the parent closes stdin
    await pc.close()
    sys.stdout.write(json.dumps(received) + "\n")
    sys.stdout.flush()


async def send_round(send_loop: str, streams: int, seconds: float) -> dict[str, float]:
    """One round: ``streams`` tracks to a fresh receiver; CPU microseconds per frame sent."""
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sender_bench", "--receive",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert receiver.stdin and receiver.stdout
    clip = load_clip(0)
    tracks = [ClipTrack(clip) for _ in range(streams)]
    pc = RTCPeerConnection()
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if send_loop == "lean":
            use_lean_rtp_loop(transceiver.sender)
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription
    receiver.stdin.write((json.dumps({"sdp": offer.sdp, "type": offer.type}) + "\n").encode())
    await pc.setRemoteDescription(
        RTCSessionDescription(**json.loads(await receiver.stdout.readline()))
    )
    while pc.connectionState != "connected":
        await asyncio.sleep(0.05)
    await asyncio.sleep(2)  # warm-up: ICE, DTLS, first keyframes
    sent_before, cpu_before, wall_before = (
        sum(t._count for t in tracks),
        time.process_time(),
        time.monotonic(),
    )
    await asyncio.sleep(seconds)
    sent = sum(t._count for t in tracks) - sent_before
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    total_sent = sum(t._count for t in tracks)
    await pc.close()
    receiver.stdin.close()
    received = json.loads(await receiver.stdout.readline())
    await receiver.wait()
    return {
        "us_per_frame": 1e6 * cpu / sent,
        "cpu_percent": 100 * cpu / wall,
        "fps": sent / wall,
        "delivered": received["frames"] / total_sent,
        "incomplete": received["incomplete"],
    }


async def run(streams: int, seconds: float, rounds: int) -> None:
    load_clip(0)  # encode (or load the cached) clip before anything is timed
    results: dict[str, list[dict[str, float]]] = {loop: [] for loop in LOOPS}
    for number in range(rounds):
        for send_loop in LOOPS if number % 2 == 0 else reversed(LOOPS):
            result = await send_round(send_loop, streams, seconds)
            results[send_loop].append(result)
            print(
                f"round {number + 1} {send_loop:>6}: {result['us_per_frame']:.0f} us/frame, "
                f"CPU {result['cpu_percent']:.1f}%, {result['fps']:.0f} frames/s, "
                f"{100 * result['delivered']:.1f}% delivered, "
                f"{result['incomplete']:.0f} incomplete",
                flush=True,
            )
    medians = {loop: statistics.median(r["us_per_frame"] for r in results[loop]) for loop in LOOPS}
    print(
        f"median CPU per frame sent: aiortc {medians['aiortc']:.0f} us, "
        f"lean {medians['lean']:.0f} us -> the lean loop costs "
        f"{medians['lean'] / medians['aiortc']:.2f}x as much",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=20, help="video streams sent at once")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per send loop")
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(receive() if args.receive else run(args.streams, args.seconds, args.rounds))


if __name__ == "__main__":
    main()

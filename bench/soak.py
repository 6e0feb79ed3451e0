"""Soak: rooms of four for minutes while a CPU hog takes one core; do calls survive?

Each participant publishes a pre-encoded clip (no encoding cost) and counts the
frames it receives from the other three, by stream. The figures that matter are
absolute, not relative: media connections the server closed (target: zero), the
longest freeze of any stream (target: ≤ 2 s) and the server's event-loop lag
(``/stats``). The same run first measures a short baseline without the hog, so
the effect of the hog is visible next to it.

    python -m bench.soak --minutes 10 --rooms 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.load_client import BenchClient, Catalogue, join, publisher_name
from bench.relay_bench import REPORT, ROOT, Server, cpu_seconds
from bench.report import replace_section
from bench.synthetic import load_clip
from server.loop_health import LoopLag
from server.media.aiortc_hooks import install_aiortc_hooks

logger = logging.getLogger("soak")

ROOM_SIZE = 4
HOG = "while True: pass"
SERVER_CPU, CLIENTS_CPU = 0, 1  # a CPU the machine lacks is not pinned to


@dataclass
class Phase:
    """One measured window: with or without the CPU hog."""

    name: str
    seconds: float
    freezes: list[float] = field(default_factory=list)  # the longest gap of each stream, s
    freeze_starts: list[float] = field(default_factory=list)  # s into the phase, same order
    events: Counter[str] = field(default_factory=Counter)  # what the clients were told
    fps: list[float] = field(default_factory=list)
    media_closed: int = 0
    failed_connections: int = 0
    loop_lag: dict[str, Any] = field(default_factory=dict)
    clients_loop_lag: dict[str, Any] = field(default_factory=dict)  # behind: figures invalid
    timeline: list[dict[str, Any]] = field(default_factory=list)  # server and client counters
    server_cpu_percent: float = 0.0
    clients_cpu_percent: float = 0.0  # this process: the load generator

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "seconds": round(self.seconds, 1),
            "streams": len(self.freezes),
            "media_closed_by_server": self.media_closed,
            "failed_connections": self.failed_connections,
            "longest_freeze_s": round(max(self.freezes, default=0.0), 3),
            "median_longest_freeze_s": round(statistics.median(self.freezes or [0.0]), 3),
            "longest_freeze_starts_s": sorted(round(start, 1) for start in self.freeze_starts),
            "client_events": dict(self.events),
            "fps_median": round(statistics.median(self.fps or [0.0]), 1),
            "fps_min": round(min(self.fps, default=0.0), 1),
            "loop_lag_ms": self.loop_lag,
            "clients_loop_lag_ms": self.clients_loop_lag,
            "timeline": self.timeline,
            "server_cpu_percent": round(self.server_cpu_percent, 1),
            "clients_cpu_percent": round(self.clients_cpu_percent, 1),
        }


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats", timeout=10) as response:
        return json.loads(response.read())


async def open_rooms(url: str, rooms: int) -> list[BenchClient]:
    """``rooms`` rooms of four, each participant publishing its own clip."""
    identities = rooms * ROOM_SIZE
    catalogue = Catalogue([load_clip(i) for i in range(identities)])
    clients: list[BenchClient] = []
    for identity in range(identities):
        room = f"soak-{identity // ROOM_SIZE}"
        clip = load_clip(identity)
        clients.append(
            await join(url, room, publisher_name(identity), clip, False, catalogue=catalogue)
        )
    for client in clients:
        await client.wait_until(lambda c=client: len(c.publishers_seen()) >= ROOM_SIZE - 1, 120)
        await client.wait_for_media(client.publishers_seen(), kinds=["video"], timeout=120)
        await client.wait_connected(timeout=120)
    return clients


def media_closed_events(clients: list[BenchClient]) -> int:
    return sum(1 for client in clients for event, _ in client.events if event == "media_closed")


def media_counters(url: str) -> dict[str, int]:
    """Video packets the server received and sent (or dropped) so far, over all rooms."""
    with urllib.request.urlopen(url + "/rooms", timeout=10) as response:
        rooms = json.loads(response.read())["rooms"]
    counters: Counter[str] = Counter()
    for room in rooms:
        for peer in room["media"]["peers"]:
            for publication in peer["publications"].values():
                if publication["kind"] == "video":
                    counters["received"] += publication["packets"]
            for slot in peer["slot_details"].values():
                counters["sent"] += slot.get("packets", 0)
                counters["dropped"] += slot.get("dropped", 0)
    return dict(counters)


async def follow(server: Server, clients: list[BenchClient], phase: Phase, every: float) -> None:
    """Every ``every`` seconds: the server's video counters beside the frames the clients got."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        counters = await asyncio.to_thread(media_counters, server.url)
        frames = sum(len(arrivals) for client in clients for arrivals in client.frames.values())
        seconds = round(time.monotonic() - started)
        phase.timeline.append({"t": seconds, **counters, "frames": frames})


def event_name(event: str, payload: Any) -> str:
    """The event, with its reason when it gives one (``media_closed:ice_failed``)."""
    reason = payload.get("reason") if isinstance(payload, dict) else None
    return f"{event}:{reason}" if reason else event


def longest_gap(marks: list[float]) -> tuple[float, float]:
    """(length, start) of the longest interval between consecutive ``marks``."""
    return max((b - a, a) for a, b in itertools.pairwise(marks))


async def measure(server: Server, clients: list[BenchClient], phase: Phase) -> Phase:
    closed_before = media_closed_events(clients)
    events_before = [len(client.events) for client in clients]
    for client in clients:
        client.frames.clear()
        client.measuring = True
    cpu_before = cpu_seconds(server.process.pid)
    clients_cpu_before = time.process_time()
    # The load clients' own loop: when it falls seconds behind, they answer the server's
    # ICE consent checks late, like a frozen browser would, and the phase measures them.
    clients_lag = LoopLag(window=int(phase.seconds / 0.1) + 1)
    clients_lag.start()
    started = time.time()
    following = asyncio.create_task(follow(server, clients, phase, every=20.0))
    await asyncio.sleep(phase.seconds)
    following.cancel()
    await clients_lag.stop()
    phase.clients_loop_lag = clients_lag.stats()
    ended = time.time()
    for client in clients:
        client.measuring = False
    phase.server_cpu_percent = 100 * (cpu_seconds(server.process.pid) - cpu_before) / phase.seconds
    phase.clients_cpu_percent = 100 * (time.process_time() - clients_cpu_before) / phase.seconds
    for client in clients:
        for mid, arrivals in client.frames.items():
            if client.slot_identity(mid) is None:
                continue
            gap, start = longest_gap([started, *arrivals, ended])
            phase.freezes.append(gap)
            phase.freeze_starts.append(start - started)
            phase.fps.append(len(arrivals) / phase.seconds)
        if client.connection_state in ("failed", "closed"):
            phase.failed_connections += 1
    phase.media_closed = media_closed_events(clients) - closed_before
    for client, before in zip(clients, events_before, strict=True):
        phase.events.update(event_name(event, payload) for event, payload in client.events[before:])
    phase.loop_lag = server_stats(server.url)["loop_lag"]
    return phase


def write_report(phases: list[dict[str, Any]], args: argparse.Namespace) -> None:
    lines = [
        "## Soak (bench/soak.py)",
        "",
        f"{args.rooms} rooms of {ROOM_SIZE} (every participant publishes a 15 fps clip and "
        f"receives the other three), {args.baseline_minutes} min without and {args.minutes} "
        "min with a CPU hog spinning on the server's core (server and hog pinned to CPU 0, the "
        "load clients to CPU 1), on this machine.",
        "",
        "| phase | streams | media closed by server | longest freeze | median longest "
        "freeze | fps median / min | loop lag p99 / max (ms) | server CPU | load clients' CPU "
        "| load clients' loop lag p99 / max (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in phases:
        lag = phase["loop_lag_ms"]
        lines.append(
            f"| {phase['phase']} | {phase['streams']} | {phase['media_closed_by_server']} | "
            f"{phase['longest_freeze_s']} s | {phase['median_longest_freeze_s']} s | "
            f"{phase['fps_median']} / {phase['fps_min']} | "
            f"{lag.get('p99_ms')} / {lag.get('max_ms')} | {phase['server_cpu_percent']} % | "
            f"{phase['clients_cpu_percent']} % | "
            f"{phase['clients_loop_lag_ms'].get('p99_ms')} / "
            f"{phase['clients_loop_lag_ms'].get('max_ms')} |"
        )
    replace_section(REPORT, "soak", "\n".join(lines) + "\n")


def pin(pid: int, cpu: int) -> None:
    """Keep a process (0: this one) on one CPU, where the platform allows it."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(pid, {cpu})


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    # Info logs tell why a media connection closed (consent, DTLS, the client).
    server = Server("forward", extra=("--log-level", "info"))
    hog: subprocess.Popen[bytes] | None = None
    clients: list[BenchClient] = []
    # The hog competes with the server for its core, as a busy neighbour on a server host
    # would; the load clients, which stand for browsers on other machines, keep the other.
    pin(server.process.pid, SERVER_CPU)
    pin(0, CLIENTS_CPU)
    try:
        clients = await open_rooms(server.url, args.rooms)
        phases = []
        if args.baseline_minutes > 0:
            baseline = Phase("no hog", args.baseline_minutes * 60)
            phases.append((await measure(server, clients, baseline)).summary())
            print(json.dumps(phases[-1]), flush=True)
        hog = subprocess.Popen([sys.executable, "-c", HOG], cwd=ROOT)
        pin(hog.pid, SERVER_CPU)
        loaded = Phase("CPU hog on the server's core", args.minutes * 60)
        phases.append((await measure(server, clients, loaded)).summary())
        print(json.dumps(phases[-1]), flush=True)
        return phases
    finally:
        if hog is not None:
            hog.kill()
        for client in clients:
            await client.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="with the CPU hog")
    parser.add_argument("--baseline-minutes", type=float, default=1.0, help="without it")
    parser.add_argument("--rooms", type=int, default=3)
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # The load clients stand in for browsers, which keep ICE consent as RFC 7675 says (30 s,
    # with retransmissions). Stock aioice gives each check 0.5 s and no retry, so on this
    # starved machine the clients themselves would drop their calls: patch them as the
    # server is patched, so that what is measured is the server.
    install_aiortc_hooks()
    phases = asyncio.run(run(args))
    if not args.no_report:
        write_report(phases, args)


if __name__ == "__main__":
    main()

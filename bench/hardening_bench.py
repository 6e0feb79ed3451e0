"""Hardening benchmark: what each of issue 18's attacks costs the server and its bystanders.

Run it from the project folder::

    .venv/bin/python -m bench.hardening_bench            # 10 s per attack
    .venv/bin/python -m bench.hardening_bench --quick    # 3 s per attack

A relay-mode server runs in its own process. Two bystanders chat in their own
room the whole time: every 20 ms one sends a message and the time until the
other receives it is recorded, so an event-loop stall shows up as a slow
delivery. First with no attack (the baseline), then during each attack, sent
as fast as the server answers. For each phase the bench prints the bystanders'
delivery p50/p95/max, how many attack messages were sent and their median ack
time, the server's CPU (in all and per attack message: the loop time one
message costs, which does not depend on what else runs on the machine) and its
memory growth. It also times aiortc's
parser on the largest offer the SDP budget still accepts (the ceiling of what one
offer can cost), against an offer from a real aiortc client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import SessionDescription

from bench.attacks import BOMBS, real_offer, trickled_candidates
from bench.relay_bench import RESULTS, cpu_seconds, rss_mb
from server.media import sdp_budget
from tests.support.server import ServerProcess

logger = logging.getLogger("hardening_bench")
PROBE_INTERVAL = 0.02

Attack = Callable[[str, float], Awaitable[list[float]]]


class Bystanders:
    """Two clients in their own room, timing chat delivery from one to the other."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.alice = socketio.AsyncClient(reconnection=False)
        self.bob = socketio.AsyncClient(reconnection=False)
        self._sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.bob.on("chat_message", self._received)

    def _received(self, message: dict[str, Any]) -> None:
        sent = self._sent.pop(message["text"], None)
        if sent is not None:
            self.latencies.append(time.perf_counter() - sent)

    async def start(self) -> None:
        for client in (self.alice, self.bob):
            await client.connect(self.url, transports=["websocket"])
            await client.call("join_room", {"room": "bystanders"})

    async def probe(self, duration: float) -> list[float]:
        self.latencies = []
        deadline = time.perf_counter() + duration
        index = 0
        while time.perf_counter() < deadline:
            text = f"probe {index}"
            self._sent[text] = time.perf_counter()
            await self.alice.emit("chat_message", {"text": text})
            index += 1
            await asyncio.sleep(PROBE_INTERVAL)
        await asyncio.sleep(1.0)  # the last deliveries
        lost = len(self._sent)
        self._sent.clear()
        return self.latencies + [float("inf")] * lost

    async def stop(self) -> None:
        await self.alice.disconnect()
        await self.bob.disconnect()


async def attacker(url: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"])
    return client


async def timed_calls(client: socketio.AsyncClient, duration: float, make: Callable) -> list[float]:
    """Call ``make(i)`` -> (event, args) back to back for ``duration`` s; ack times."""
    times = []
    deadline = time.perf_counter() + duration
    index = 0
    while time.perf_counter() < deadline:
        event, args = make(index)
        started = time.perf_counter()
        await client.call(event, args, timeout=30)
        times.append(time.perf_counter() - started)
        index += 1
    return times


def bomb_attack(bomb: str) -> Attack:
    async def run(url: str, duration: float) -> list[float]:
        pc, sdp = await real_offer()
        sdp = BOMBS[bomb](sdp)
        client = await attacker(url)
        await client.call("join_room", {"room": f"bomb-{bomb}"})
        try:
            return await timed_calls(
                client, duration, lambda _: ("offer", {"type": "offer", "sdp": sdp})
            )
        finally:
            await client.disconnect()
            await pc.close()

    return run


async def trickle_attack(url: str, duration: float) -> list[float]:
    pc, sdp = await real_offer()
    client = await attacker(url)
    await client.call("join_room", {"room": "trickle"})
    await client.call("offer", {"type": "offer", "sdp": sdp})
    candidates = trickled_candidates(10_000)
    try:
        return await timed_calls(
            client, duration, lambda i: ("ice", candidates[i % len(candidates)])
        )
    finally:
        await client.disconnect()
        await pc.close()


async def raw_flood(
    url: str, duration: float, header: str | None, frame: str | bytes
) -> list[float]:
    """Send ``frame`` over one Socket.IO websocket as fast as it goes (after ``header``)."""
    ws_url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    sent = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.receive(timeout=5)
        await ws.send_str("40")
        await ws.receive(timeout=5)
        if header:
            await ws.send_str(header)
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            sent.append(time.perf_counter() - started)
            if len(sent) % 50 == 0:
                await asyncio.sleep(0)  # let the pongs through
    return sent


async def binary_attack(url: str, duration: float) -> list[float]:
    header = '459999999999-["chat_message",{"_placeholder":true,"num":0}]'
    return await raw_flood(url, duration, header, b"\x04" + bytes(240 * 1024))


async def malformed_attack(url: str, duration: float) -> list[float]:
    return await raw_flood(url, duration, None, "42[not json")


def summary(values: list[float]) -> dict[str, float]:
    finite = sorted(v for v in values if v != float("inf"))
    if not finite:
        return {"n": 0}
    return {
        "n": len(values),
        "lost": len(values) - len(finite),
        "p50_ms": round(statistics.median(finite) * 1000, 2),
        "p95_ms": round(finite[int(len(finite) * 0.95) - 1 if len(finite) > 1 else 0] * 1000, 2),
        "max_ms": round(finite[-1] * 1000, 2),
    }


async def attack_in_subprocess(name: str, url: str, duration: float) -> list[float]:
    """Run one attack in its own process, so its client work cannot slow the bystanders."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.hardening_bench", "--attack", name, "--url", url,
        "--duration", str(duration), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await process.communicate()
    return json.loads(output)


async def measure(server: ServerProcess, name: str, duration: float) -> dict:
    bystanders = Bystanders(server.url)
    await bystanders.start()
    pid = server.process.pid
    cpu, rss = cpu_seconds(pid), rss_mb(pid)
    probe = asyncio.create_task(bystanders.probe(duration))
    attack_times = await attack_in_subprocess(name, server.url, duration) if name in ATTACKS else []
    latencies = await probe
    server_cpu = cpu_seconds(pid) - cpu
    result = {
        "phase": "idle (baseline)" if name == "idle" else name,
        "server_cpu_ms_per_attack_message": round(server_cpu * 1000 / len(attack_times), 3)
        if attack_times
        else None,
        "bystander_delivery": summary(latencies),
        "attack_messages": len(attack_times),
        "attack_ack_p50_ms": summary(attack_times).get("p50_ms"),
        "server_cpu_percent": round(server_cpu / (duration + 1) * 100, 1),
        "rss_growth_mb": round(rss_mb(pid) - rss, 1),
    }
    await bystanders.stop()
    return result


def parse(sdp: str) -> None:
    """What the server does with an accepted offer before aiortc applies it."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind in CODECS:
            find_common_codecs(CODECS[media.kind], media.rtp.codecs)


def worst_accepted_offer() -> str:
    """Sections of 64 codecs with feedback lines until the offer-wide budget is reached."""
    head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    pts = [p for p in range(128) if not 64 <= p < 96][: sdp_budget.MAX_FORMATS]
    feedback = sdp_budget.MAX_WILDCARD_FEEDBACK
    lines = [f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}", "a=ice-ufrag:u"]
    lines += [f"a=rtpmap:{pt} {'rtx' if i % 2 else 'VP8'}/90000" for i, pt in enumerate(pts)]
    lines += ["a=rtcp-fb:* nack"] * feedback
    lines += [f"a=rtcp-fb:{pts[i % len(pts)]} x" for i in range(sdp_budget.MAX_FEEDBACK - feedback)]
    section = "\r\n".join(lines) + "\r\n"
    sdp = head
    while True:
        candidate = sdp + section.replace("a=ice-ufrag:u", f"a=mid:{sdp.count('m=')}")
        try:
            sdp_budget.check_offer(candidate, 72)
        except Exception:
            return sdp
        sdp = candidate


ATTACKS: dict[str, Attack] = {
    **{f"offer bomb: {name}": bomb_attack(name) for name in sorted(BOMBS)},
    "trickled candidates": trickle_attack,
    "binary attachments": binary_attack,
    "malformed packets": malformed_attack,
}


async def run(quick: bool) -> dict[str, Any]:
    duration = 3.0 if quick else 10.0
    server = ServerProcess(
        args=("--media", "relay", "--rate-limit", "100000", "--rate-burst", "100000",
              "--max-connections-per-ip", "0", "--log-level", "warning"),
    ).start()  # fmt: skip
    try:
        phases = [await measure(server, name, duration) for name in ["idle", *ATTACKS]]
        log = server.log()
    finally:
        server.stop()
    pc, sdp = await real_offer()
    await pc.close()
    ceiling = worst_accepted_offer()
    before = {}
    if not quick:  # what one bomb cost before the budget: aiortc parses it (~25 s, once)
        bomb = BOMBS["rtpmap+rtcp-fb"](sdp)
        before["the rtpmap+rtcp-fb bomb, no budget (one run)"] = cpu_ms(lambda: parse(bomb), 1)
    return {
        "phases": phases,
        "log_lines": len(log.splitlines()),
        "suppressed_reports": log.count("similar messages suppressed"),
        "parse_cpu_ms": {
            "real aiortc offer (2 sections)": cpu_ms(lambda: parse(sdp)),
            f"largest offer the budget accepts ({len(ceiling)} bytes)": cpu_ms(
                lambda: parse(ceiling)
            ),
            "the budget check of that offer": cpu_ms(lambda: sdp_budget.check_offer(ceiling, 72)),
            **before,
        },
    }


def cpu_ms(call: Callable[[], object], repeats: int = 7) -> float:
    """Median CPU milliseconds of ``call()`` (CPU time: the machine may be shared)."""
    times = []
    for _ in range(repeats):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return round(statistics.median(times) * 1000, 2)


def report(results: dict[str, Any]) -> str:
    rows = [
        "| phase | bystander chat p50 / p95 / max (ms) | attack messages | ack p50 (ms) "
        "| server CPU | server CPU per message (ms) | RSS growth |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in results["phases"]:
        delivery = phase["bystander_delivery"]
        rows.append(
            f"| {phase['phase']} | {delivery.get('p50_ms')} / {delivery.get('p95_ms')} / "
            f"{delivery.get('max_ms')} (lost {delivery.get('lost', 0)}) | "
            f"{phase['attack_messages']} | {phase['attack_ack_p50_ms'] or '-'} | "
            f"{phase['server_cpu_percent']}% | "
            f"{phase['server_cpu_ms_per_attack_message'] or '-'} | {phase['rss_growth_mb']} MB |"
        )
    rows.append("")
    rows += [
        f"- aiortc parse + codec match, {name}: {ms} ms of CPU"
        for name, ms in results["parse_cpu_ms"].items()
    ]
    rows.append(
        f"- server log: {results['log_lines']} lines for the whole run "
        f"({results['suppressed_reports']} 'suppressed' summaries)"
    )
    return "\n".join(rows)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per attack instead of 10 s")
    parser.add_argument("--attack", choices=sorted(ATTACKS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=3.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:  # one attack, in its own process (see attack_in_subprocess)
        times = asyncio.run(ATTACKS[args.attack](args.url, args.duration))
        sys.stdout.write(json.dumps(times) + "\n")
        return
    results = asyncio.run(run(args.quick))
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(RESULTS / "hardening.json").write_text(json.dumps(results, indent=2))
    sys.stdout.write(report(results) + "\n")


if __name__ == "__main__":
    main()

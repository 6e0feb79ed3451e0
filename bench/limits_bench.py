"""What the abuse limits' defaults let one client address cost the server, measured.

A relay-mode server with every default (nothing lifted) is loaded from one address
with python-socketio clients over WebSocket, up to each limit and never past it:

1. **connections**: ``--max-connections-per-ip`` connections, each in a room of its
   own with a nickname: the server's memory per connection and room, and what the
   connection after the cap gets;
2. **one full room**: ``--max-peers-per-room`` of them in one room, each sending chat at
   its per-connection rate limit (``--rate-limit``): what the room's chat budget
   (``--room-chat-rate``) lets through, the server's CPU and event-loop lag;
3. **the whole address**: every connection sending chat to its room at its rate
   limit: the most event traffic one address may send.

The figures at the server-wide ceilings (``--max-connections`` connections,
``--max-rooms`` rooms) are extrapolated from phase 1 and printed beside it.

    .venv/bin/python -m bench.limits_bench            # 10 s per load phase
    .venv/bin/python -m bench.limits_bench --quick    # 3 s per load phase
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import socketio

from bench.relay_bench import REPORT, RESULTS, cpu_seconds, rss_mb
from bench.report import replace_section
from server.settings import Settings
from tests.support.server import ServerProcess

logger = logging.getLogger("limits")


@dataclass
class Flood:
    """One load phase: clients sending chat at their rate limit."""

    name: str
    senders: int
    seconds: float
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)  # "ok" or the error code
    delivered: int = 0  # chat_message events the clients received
    server_cpu_percent: float = 0.0
    loop_lag: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "senders": self.senders,
            "seconds": self.seconds,
            "sent_per_s": round(self.sent / self.seconds),
            "answers": dict(self.answers),
            "accepted_per_s": round(self.answers["ok"] / self.seconds, 1),
            "delivered_per_s": round(self.delivered / self.seconds),
            "server_cpu_percent": round(self.server_cpu_percent, 1),
            "loop_lag_ms": {k: self.loop_lag.get(k) for k in ("p50_ms", "p99_ms", "max_ms")},
        }


class Participant:
    """One python-socketio connection that counts the chat it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received = 0
        self.sio.on("chat_message", self._chat)

    async def _chat(self, _message: Any) -> None:
        self.received += 1

    async def join(self, room: str, nickname: str) -> None:
        reply = await self.sio.call("join_room", {"room": room, "nickname": nickname}, timeout=10)
        assert reply.get("ok"), reply


async def open_connections(url: str, wanted: int) -> tuple[list[Participant], str | None]:
    """Up to ``wanted`` connections; also what one more than that got (None: accepted)."""
    participants = []
    for _ in range(wanted):
        participant = Participant()
        await participant.sio.connect(url, transports=["websocket"])
        participants.append(participant)
    extra = Participant()
    try:
        await extra.sio.connect(url, transports=["websocket"])
    except socketio.exceptions.ConnectionError as refused:
        if extra.sio.eio.http is not None:  # the refused handshake's HTTP session
            await extra.sio.eio.http.close()
        return participants, str(refused) or "refused"
    await extra.sio.disconnect()
    return participants, None


async def send_at_rate(participant: Participant, rate: float, seconds: float, flood: Flood) -> None:
    """Chat at ``rate`` per second for ``seconds``, counting the server's answers."""

    def answered(reply: Any) -> None:
        ok = isinstance(reply, dict) and reply.get("ok")
        flood.answers["ok" if ok else str(reply.get("error", {}).get("code"))] += 1

    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        for _ in range(due - sent):
            await participant.sio.emit("chat_message", {"text": f"m{sent}"}, callback=answered)
            sent += 1
            flood.sent += 1
        await asyncio.sleep(1 / rate)


async def flood(
    server: ServerProcess, senders: list[Participant], everyone: list[Participant], flood: Flood
) -> Flood:
    rate = Settings().rate_limit
    received_before = sum(p.received for p in everyone)
    cpu_before = cpu_seconds(server.process.pid)
    started = time.monotonic()
    await asyncio.gather(*(send_at_rate(p, rate, flood.seconds, flood) for p in senders))
    await asyncio.sleep(1.0)  # the last answers and deliveries
    elapsed = time.monotonic() - started
    flood.server_cpu_percent = 100 * (cpu_seconds(server.process.pid) - cpu_before) / elapsed
    flood.delivered = sum(p.received for p in everyone) - received_before
    flood.loop_lag = server.get_json("/stats")["loop_lag"]
    return flood


async def run(seconds: float) -> dict[str, Any]:
    defaults = Settings()
    server = ServerProcess(args=("--media", "relay")).start()
    participants: list[Participant] = []
    try:
        pid = server.process.pid
        await asyncio.sleep(1.0)
        rss_before = rss_mb(pid)
        participants, refusal = await open_connections(server.url, defaults.max_connections_per_ip)
        for index, participant in enumerate(participants):
            await participant.join(f"limits-{index}", f"person {index}")
        await asyncio.sleep(2.0)
        rss_held = rss_mb(pid)
        per_connection_kb = 1024 * (rss_held - rss_before) / len(participants)
        result: dict[str, Any] = {
            "defaults": {
                "max_connections_per_ip": defaults.max_connections_per_ip,
                "max_connections": defaults.max_connections,
                "max_rooms": defaults.max_rooms,
                "max_peers_per_room": defaults.max_peers_per_room,
                "rate_limit": defaults.rate_limit,
                "room_chat_rate": defaults.room_chat_rate,
            },
            "connections": {
                "held": len(participants),
                "one_more": refusal or "accepted",
                "rss_mb": [round(rss_before, 1), round(rss_held, 1)],
                "kb_per_connection_and_room": round(per_connection_kb, 1),
                "at_max_connections_mb": round(per_connection_kb * defaults.max_connections / 1024),
            },
        }
        print(json.dumps(result), flush=True)

        room = participants[: defaults.max_peers_per_room]
        for participant in room:
            await participant.sio.call("leave_room", timeout=10)
            await participant.join("limits-full", "member")
        full = await flood(server, room, room, Flood("one full room", len(room), seconds))
        result["full_room"] = full.summary()
        print(json.dumps(result["full_room"]), flush=True)

        everyone = await flood(
            server,
            participants,
            participants,
            Flood("the whole address", len(participants), seconds),
        )
        result["whole_address"] = everyone.summary()
        result["rss_mb_after"] = round(rss_mb(pid), 1)
        print(json.dumps(result["whole_address"]), flush=True)
        return result
    finally:
        for participant in participants:
            await participant.sio.disconnect()
        server.stop()


def write_report(result: dict[str, Any], command: str) -> None:
    d, c = result["defaults"], result["connections"]
    lines = [
        "## Abuse limits: what one address may cost (bench/limits_bench.py)",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}: a relay-mode server "
        "with every default, loaded from one address with python-socketio clients "
        "(WebSocket) up to each limit and never past it.",
        "",
        f"- **{c['held']} connections** (`--max-connections-per-ip`), each in a room of its own: "
        f"server memory {c['rss_mb'][0]} → {c['rss_mb'][1]} MB, "
        f"**{c['kb_per_connection_and_room']} KB per connection and room**; the next connection: "
        f"refused ({c['one_more']}). At `--max-connections` ({d['max_connections']}) that is "
        f"~{c['at_max_connections_mb']} MB.",
        "",
        "| phase | senders | chat sent/s | accepted/s | refused | delivered/s | server CPU | "
        "loop lag p50 / p99 / max (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in ("full_room", "whole_address"):
        phase = result[key]
        refused = ", ".join(f"{n:,} {code}" for code, n in phase["answers"].items() if code != "ok")
        lag = phase["loop_lag_ms"]
        lines.append(
            f"| {phase['phase']} | {phase['senders']} | {phase['sent_per_s']} | "
            f"{phase['accepted_per_s']} | {refused or 0} | {phase['delivered_per_s']} | "
            f"{phase['server_cpu_percent']}% | "
            f"{lag['p50_ms']} / {lag['p99_ms']} / {lag['max_ms']} |"
        )
    replace_section(REPORT, "limits", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per load phase")
    parser.add_argument("--seconds", type=float, help="seconds per load phase")
    parser.add_argument("--write", action="store_true", help="update docs/benchmark.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    result = asyncio.run(run(seconds))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "limits.json").write_text(json.dumps(result, indent=2))
    if args.write:
        write_report(result, "python -m bench.limits_bench" + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()

"""What a Prometheus scrape costs: GET /metrics against /stats and /health, in one run.

A p2p-mode server holds ``--clients`` Socket.IO connections spread over ``--rooms``
rooms (and a history of events and errors); the bench then fetches each endpoint
``--scrapes`` times, interleaved, and prints the median latency of each and its ratio
to ``/health`` (the cheapest endpoint, the baseline), plus the /metrics body size.

    .venv/bin/python -m bench.metrics_bench            # quick: 200 clients, 50 rooms
    .venv/bin/python -m bench.metrics_bench --clients 1000 --rooms 250
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import socketio

from bench.relay_bench import free_port

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("/health", "/stats", "/metrics")


def start_server(port: int, clients: int, media: str = "p2p") -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port),
         "--media", media, "--log-level", "warning", "--max-peers-per-room", str(clients)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 90  # a loaded machine starts slowly
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


async def populate(url: str, clients: int, rooms: int) -> list[socketio.AsyncClient]:
    """Connect and join; each client also sends a chat line and one refused event."""
    connected = []
    for index in range(clients):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(url, transports=["websocket"], wait_timeout=10)
        await client.call("enter_room", (f"room-{index % rooms}", f"user{index}"), timeout=10)
        await client.call("nickname", (5,), timeout=10)  # refused: an error to count
        connected.append(client)
    return connected


def fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        size = len(response.read())
    return time.perf_counter() - started, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, args.clients)
    try:
        clients = await populate(url, args.clients, args.rooms)
        timings: dict[str, list[float]] = {endpoint: [] for endpoint in ENDPOINTS}
        sizes: dict[str, int] = {}
        for _ in range(args.scrapes):
            for endpoint in ENDPOINTS:
                seconds, size = await asyncio.to_thread(fetch, url + endpoint)
                timings[endpoint].append(seconds)
                sizes[endpoint] = size
        for client in clients:
            await client.disconnect()
    finally:
        server.terminate()
        server.wait(30)

    baseline = statistics.median(timings["/health"])
    print(f"{args.clients} connections in {args.rooms} rooms, {args.scrapes} fetches each")
    for endpoint in ENDPOINTS:
        median = statistics.median(timings[endpoint])
        print(
            f"{endpoint:9} median {median * 1000:7.2f} ms  x{median / baseline:5.2f} of /health"
            f"  body {sizes[endpoint]:7d} bytes"
        )


if __name__ == "__main__":
    asyncio.run(main())

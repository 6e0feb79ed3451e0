"""How long a room's participants are without media after its worker is killed.

A room of four aiortc participants (each sending video) on a server with media
workers; the worker that owns the room gets SIGKILL, and the time is taken until
every participant has decoded a picture from every other one again. Used by
``relay_bench.py --workers`` (the median over a few rounds is printed).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable

from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from server.client import RoomClient

PEOPLE = 4


def owner_pid(url: str, room: str) -> int:
    with urllib.request.urlopen(url + "/stats", timeout=5) as response:
        workers = json.loads(response.read())["media"]["workers"]
    return next(int(w["pid"]) for w in workers if room in w["rooms"])


async def everyone_sees_everyone(clients: list[RoomClient], timeout: float = 60.0) -> None:
    async def one(client: RoomClient, other: RoomClient) -> None:
        assert other.peer_id is not None
        while True:  # a track that ends under us was replaced: take the new one
            await client.wait_for_media([other.peer_id], kinds=["video"], timeout=timeout)
            try:
                await asyncio.wait_for(client.subscribe(other.peer_id, "video").recv(), timeout)
                return
            except MediaStreamError:
                await asyncio.sleep(0.02)

    await asyncio.gather(*(one(c, o) for c in clients for o in clients if o is not c))


async def recovery_seconds(
    clients: list[RoomClient], survivors: list[RoomClient], kill: Callable[[], None]
) -> float:
    """Seconds from ``kill()`` (of what runs the room's media) until the survivors, told
    their media closed, see each other again. Closes every client."""
    try:
        await everyone_sees_everyone(clients)
        await asyncio.sleep(1.0)
        told: list[object] = []
        for client in survivors:
            client.on("media_closed", told.append)
        killed = time.monotonic()
        kill()
        while len(told) < len(survivors):  # everyone drops the dead connection first
            await asyncio.sleep(0.01)
        await everyone_sees_everyone(survivors)
        return time.monotonic() - killed
    finally:
        for client in clients:
            await client.close()


async def joined(urls: list[str], room: str, prefix: str) -> list[RoomClient]:
    """One client per URL in ``room``, each sending a test pattern."""
    clients = [RoomClient(url, nickname=f"{prefix}{i}") for i, url in enumerate(urls)]
    for client in clients:
        await client.connect()
        await client.join(room, video=VideoStreamTrack())
    return clients


async def one_round(url: str, room: str) -> float:
    clients = await joined([url] * PEOPLE, room, "f")
    pid = owner_pid(url, room)
    # A worker of the benchmark's own server.
    return await recovery_seconds(clients, clients, lambda: os.kill(pid, signal.SIGKILL))


def measure_failover(url: str, rounds: int) -> list[float]:
    """Seconds without media after a worker kill, one figure per round."""

    async def run() -> list[float]:
        results = []
        for index in range(rounds):
            results.append(await one_round(url, f"failover-{index}"))
            await asyncio.sleep(3.0)  # the killed worker's replacement comes up
        return results

    return asyncio.run(run())

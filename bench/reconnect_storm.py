"""Reconnect storm: many clients lose their Socket.IO connection at random and come back.

Every client joins one room and keeps its join ack's ``resume_token``. Then, at
random moments, each one's connection is lost (it stops answering the server's
pings, the way a network change looks) and, a little later, it reconnects and
asks for its place back. The figures: how many kept their identity (same
``peer_id``, target: all), how many ``user_left``/``user_joined`` the others saw
(target: none), and how long after the last restore the room looked whole
again to everyone (target: ≤ 5 s), against the time the server needs to notice a
loss at all (its ping interval plus timeout) measured in the same run.

    python -m bench.reconnect_storm --clients 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import time
from typing import Any

import socketio

from bench.relay_bench import Server

logger = logging.getLogger("reconnect_storm")

PING_INTERVAL, PING_TIMEOUT = 1.0, 2.0


class StormClient:
    """One participant: its current connection, its identity, and what it heard."""

    def __init__(self, url: str, room: str, index: int) -> None:
        self.url, self.room, self.nickname = url, room, f"c{index}"
        self.peer_id = ""
        self.token = ""
        self.kept_identity = True
        self.presence_events = 0
        self.sio = self._new_client()

    def _new_client(self) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False)

        async def presence(_: Any) -> None:
            self.presence_events += 1

        client.on("user_left", presence)
        client.on("user_joined", presence)
        return client

    async def join(self) -> None:
        await self.sio.connect(self.url, transports=["websocket"], wait_timeout=20)
        request = {"room": self.room, "nickname": self.nickname}
        if self.token:
            request["resume"] = self.token
        ack = await self.sio.call("join_room", request, timeout=20)
        if self.peer_id and ack["peer_id"] != self.peer_id:
            self.kept_identity = False
        self.peer_id, self.token = ack["peer_id"], ack["resume_token"]

    async def lose_connection(self) -> None:
        """Fall silent (pings go unanswered) until the server lets the connection go."""
        old = self.sio

        async def lost(packet: Any) -> None:
            return None

        old.eio._send_packet = lost  # type: ignore[method-assign]
        while old.connected:
            await asyncio.sleep(0.1)
        self.sio = self._new_client()

    async def members(self) -> int:
        (rooms,) = [await self.sio.call("list_rooms", timeout=20)]
        return next((r["participants"] for r in rooms["rooms"] if r["name"] == self.room), 0)

    async def close(self) -> None:
        await self.sio.disconnect()


async def storm(url: str, clients: int, window: float) -> dict[str, Any]:
    room = f"storm-{random.randrange(1 << 30)}"
    everyone = [StormClient(url, room, i) for i in range(clients)]
    for client in everyone:
        await client.join()
    await asyncio.sleep(1.0)
    for client in everyone:
        client.presence_events = 0  # from here on, nobody should come or go

    noticed: list[float] = []

    async def drop_and_return(client: StormClient) -> float:
        await asyncio.sleep(random.uniform(0, window))
        silent = time.monotonic()
        await client.lose_connection()
        noticed.append(time.monotonic() - silent)
        await asyncio.sleep(random.uniform(0.1, 1.0))
        await client.join()
        return time.monotonic()

    restores = await asyncio.gather(*(drop_and_return(c) for c in everyone))
    last_restore = max(restores)
    while True:
        counts = await asyncio.gather(*(c.members() for c in everyone))
        if all(count == clients for count in counts):
            break
        await asyncio.sleep(0.05)
    converged = time.monotonic() - last_restore
    result = {
        "clients": clients,
        "kept_identity": sum(c.kept_identity for c in everyone),
        "presence_events_seen": sum(c.presence_events for c in everyone),
        "converged_after_last_restore_s": round(converged, 3),
        "loss_noticed_median_s": round(statistics.median(noticed), 3),
        "ping_interval_plus_timeout_s": PING_INTERVAL + PING_TIMEOUT,
    }
    for client in everyone:
        await client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--window", type=float, default=5.0, help="seconds the cuts spread over")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = Server(
        "forward",
        extra=("--ping-interval", str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT)),
    )
    try:
        result = asyncio.run(storm(server.url, args.clients, args.window))
    finally:
        server.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

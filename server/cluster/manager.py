"""The Socket.IO client manager of a cluster node: Redis fan-out between nodes, bounded
queues on each node.

python-socketio's ``AsyncRedisManager`` publishes every emit on a Redis channel and
each node delivers it to its own connections; delivery on a node goes through
:class:`~server.fanout.FanoutManager` (one encode per broadcast, bounded send
queues), which sits after the pub/sub manager in the method resolution order.

python-socketio publishes each emit with a Redis round trip of its own: 2,000
clients relaying signalling through two nodes got 333 messages/s across (bench/
signaling_bench.py --cluster). Here the emits of a node are published in batches:
one PUBLISH carries every emit made while the previous one was on its way, and each
emit still returns once its batch is in Redis (what python-socketio's emit promised:
what the caller does next follows it). Messages are encoded with orjson.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import socketio

from ..fanout import FanoutManager
from ..packets import OrjsonModule

SOCKETIO_CHANNEL = "roomrelay:socketio"
BATCH = "roomrelay_batch"  # the "method" of a PUBLISH that carries several of python-socketio's
# Emits per PUBLISH: bounded, so that no message nears Redis's output buffer limits for a
# subscriber that lags (32 MB for pub/sub clients by default).
MAX_BATCH = 200


class RedisFanoutManager(socketio.AsyncRedisManager, FanoutManager):
    """``AsyncRedisManager`` whose local deliveries are :class:`FanoutManager`'s."""

    def __init__(self, url: str, max_queued: int) -> None:
        socketio.AsyncRedisManager.__init__(self, url, channel=SOCKETIO_CHANNEL, json=OrjsonModule)
        self.max_queued = max_queued
        # Batches waiting to be published, oldest first; emits join the newest.
        self._waiting: deque[tuple[list[dict[str, Any]], asyncio.Future[None]]] = deque()
        self._publisher: asyncio.Task[None] | None = None
        self.batches_published = 0

    async def _publish(self, data: dict[str, Any]) -> None:
        """Add ``data`` to the next batch; return once that batch is published."""
        if not self._waiting or len(self._waiting[-1][0]) >= MAX_BATCH:
            self._waiting.append(([], asyncio.get_running_loop().create_future()))
        batch, sent = self._waiting[-1]
        batch.append(data)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_batches())
        await asyncio.shield(sent)

    async def _publish_batches(self) -> None:
        """Publish what waits, one PUBLISH per batch, in order, until nothing does."""
        while self._waiting:
            batch, sent = self._waiting.popleft()
            try:
                # python-socketio's own publish, with its reconnection and retries.
                await super()._publish({"method": BATCH, "messages": batch})
                self.batches_published += 1
            finally:
                if not sent.done():
                    sent.set_result(None)

    async def _listen(self) -> AsyncIterator[Any]:
        """python-socketio's messages, taken out of their batches."""
        async for message in super()._listen():
            try:
                data = self.json.loads(message)
            except ValueError:
                continue  # not ours to read (python-socketio skips it too)
            if isinstance(data, dict) and data.get("method") == BATCH:
                for item in data.get("messages", ()):
                    yield item
            else:
                yield data

    async def leave_room(self, sid: str, namespace: str, room: str) -> None:
        """Leave on this node when the connection is here, even while it disconnects (the
        pub/sub manager would only ask the other nodes then, and the room's count would
        include the leaver until the disconnect completes)."""
        if sid in self.rooms.get(namespace, {}).get(room, {}):
            await socketio.AsyncManager.leave_room(self, sid, namespace, room)
        else:
            await super().leave_room(sid, namespace, room)


def client_manager(redis_url: str, max_queued: int) -> FanoutManager:
    """The in-memory manager, or the Redis one when the node is part of a cluster."""
    if redis_url:
        return RedisFanoutManager(redis_url, max_queued)
    return FanoutManager(max_queued)

"""Messages between cluster nodes over Redis pub/sub: a channel per node and one for all.

Messages are orjson objects. Each node publishes from one task, in order, so that
a room's commands (join, offer, candidates) arrive at the owning node in the order
they were sent; each node handles what it receives one message at a time, in
order. While Redis is unreachable messages are dropped (the heartbeat's full state
repairs membership; media commands are re-sent when a room is placed again) and
the subscription is renewed once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ..tasks import cancel_and_wait

logger = logging.getLogger(__name__)

PREFIX = "roomrelay"
EVERYONE = f"{PREFIX}:cluster"
# Seconds between attempts to subscribe again after Redis went away (doubling up to the max).
RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 2.0

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None]]


def node_channel(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


class Bus:
    """Sends to one node or to all; hands every message received to ``handler``."""

    def __init__(self, redis_url: str, node_id: str, handler: Handler) -> None:
        self.node_id = node_id
        # Publishing may time out; the subscription waits for messages as long as it takes.
        self._publisher = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._subscriber = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2.0)
        self._handler = handler
        self._outgoing: asyncio.Queue[tuple[str, bytes, asyncio.Future[None] | None]] = (
            asyncio.Queue()
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_failing = False  # warn once per outage
        self.subscribed = asyncio.Event()
        self.resubscribed: Callable[[], None] = lambda: None  # after Redis came back
        self.dropped = 0

    def send(self, node_id: str, message: Message) -> None:
        self._outgoing.put_nowait((node_channel(node_id), orjson.dumps(message), None))

    async def send_all(self, message: Message) -> None:
        """To every node but this one; returns once it is published (or dropped), so that
        whatever the caller emits next reaches the other nodes after it."""
        body = orjson.dumps({**message, "from": self.node_id})
        published = asyncio.get_running_loop().create_future()
        self._outgoing.put_nowait((EVERYONE, body, published))
        await published

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_forever()),
            asyncio.create_task(self._listen_forever()),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5.0)

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait (a little) until everything queued is published (shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._outgoing.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        await self._publisher.aclose()
        await self._subscriber.aclose()

    async def _publish_forever(self) -> None:
        while True:
            channel, body, published = await self._outgoing.get()
            try:
                await self._publisher.publish(channel, body)
                self._publish_failing = False
            except (RedisError, OSError) as exc:
                self.dropped += 1
                if not self._publish_failing:
                    logger.warning("cluster messages dropped: Redis unreachable (%s)", exc)
                self._publish_failing = True
            finally:
                if published is not None and not published.done():
                    published.set_result(None)

    async def _listen_forever(self) -> None:
        delay = RETRY_SECONDS
        first = True
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(node_channel(self.node_id), EVERYONE)
                self.subscribed.set()
                if not first:
                    logger.info("cluster bus subscribed again")
                    self.resubscribed()
                first, delay = False, RETRY_SECONDS
                async for item in pubsub.listen():
                    if item.get("type") == "message":
                        await self._deliver(item["data"])
            except (RedisError, OSError) as exc:
                if self.subscribed.is_set() or first:
                    logger.warning("cluster bus lost Redis (%s); retrying", exc)
                self.subscribed.clear()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(MAX_RETRY_SECONDS, delay * 2)

    async def _deliver(self, body: bytes) -> None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            logger.warning("ignoring a cluster message that is not JSON")
            return
        if not isinstance(message, dict) or message.get("from") == self.node_id:
            return
        try:
            await self._handler(message)
        except Exception:
            logger.exception("handling cluster message %r failed", message.get("kind"))

"""A bounded, drop-oldest queue with the task that hands its items on, in order.

Audio goes to receivers that may fall behind (a consumer of a participant's
chunks, a live listener on another process): a slow receiver loses its oldest
audio, counted, and never holds up whoever produces it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ..tasks import cancel_and_wait

Item = TypeVar("Item")


class DropOldestFeed(Generic[Item]):
    """Items for one receiver, in order; beyond ``capacity`` queued the oldest is dropped."""

    def __init__(self, receive: Callable[[Item], Awaitable[None]], capacity: int) -> None:
        self.dropped = 0
        self._receive = receive
        self._capacity = capacity
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    def offer(self, item: Item) -> None:
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            while not self._items:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
            await self._receive(self._items.popleft())

    async def drain(self, timeout: float) -> None:
        """Hand on what is queued (within ``timeout``), then stop."""
        self._closing = True
        self._ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            await cancel_and_wait(self._task)

    async def stop(self) -> None:
        """Hand on nothing more."""
        await cancel_and_wait(self._task)

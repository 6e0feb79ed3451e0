"""Garbage collection paced for a server that holds many connections.

CPython's automatic full collection walks every tracked object, and each open
connection keeps a few hundred (aiohttp's request and WebSocket, engine.io's
session and queue, the participant, timers). Holding 10,000 idle connections, a
full collection took ~1.4 s, with the event loop stopped, and objects that live
a few seconds (a ping's timer, a pending read's future) made CPython start one
every ~6 s: a fifth of a core at idle, and multi-second stalls under load
(bench/signaling_bench.py, measured with gc.callbacks).

:class:`GcPacer` keeps CPython's automatic collection of the young generations,
where nearly all garbage dies, and runs the full collection on a schedule
instead (every :data:`FULL_COLLECTION_SECONDS`), so reference cycles left by
closed connections are still reclaimed. What exists once the server has started
(modules, the application) is frozen out of every collection for good.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from aiohttp import web

from .tasks import cancel_and_wait

logger = logging.getLogger(__name__)

FULL_COLLECTION_SECONDS = 120.0
# Young collections between automatic full ones: never, in practice (the pacer runs them).
NO_AUTOMATIC_FULL_COLLECTION = 1_000_000_000


class GcPacer:
    """Full collections on a schedule; their count and durations for ``/stats``."""

    def __init__(self, interval: float = FULL_COLLECTION_SECONDS) -> None:
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._thresholds: tuple[int, int, int] | None = None
        self.full_collections = 0
        self.collected = 0  # unreachable objects found by the paced collections
        self.last_seconds = 0.0
        self.longest_seconds = 0.0

    def start(self) -> None:
        if self._task is not None:
            return
        gc.freeze()
        young, middle, _ = self._thresholds = gc.get_threshold()
        gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_COLLECTION)
        self._task = asyncio.create_task(self._collect_periodically())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
            gc.unfreeze()

    async def _collect_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.collect()

    def collect(self) -> None:
        """One full collection, timed."""
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        self.full_collections += 1
        self.collected += found
        self.last_seconds = took
        self.longest_seconds = max(self.longest_seconds, took)
        level = logging.WARNING if took >= 0.5 else logging.DEBUG
        logger.log(level, "full garbage collection: %.3f s, %d unreachable objects", took, found)

    def stats(self) -> dict[str, Any]:
        return {
            "interval_s": self._interval,
            "full_collections": self.full_collections,
            "collected": self.collected,
            "last_full_s": round(self.last_seconds, 4),
            "longest_full_s": round(self.longest_seconds, 4),
            "frozen_objects": gc.get_freeze_count(),
        }


def add_gc_pacing(app: web.Application) -> GcPacer:
    """A pacer that runs while ``app`` does."""
    pacer = GcPacer()

    async def start(app: web.Application) -> None:
        pacer.start()

    async def stop(app: web.Application) -> None:
        await pacer.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return pacer

"""How late the event loop runs: the first sign that the server cannot keep up.

A timer asks to wake every ``interval`` seconds and records how much later than
that it actually woke. Everything on the loop (signaling, ICE consent checks,
RTP forwarding) waits that long too, so the lateness is what every client feels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from .tasks import cancel_and_wait

logger = logging.getLogger(__name__)


class LoopLag:
    """Measures the event loop's lateness over a sliding window."""

    def __init__(self, interval: float = 0.1, window: int = 600, warn_after: float = 1.0) -> None:
        self._interval = interval
        self._samples: deque[float] = deque(maxlen=window)  # seconds late, newest last
        self._stamps: deque[float] = deque(maxlen=window)  # when each sample was taken
        self._warn_after = warn_after
        self._task: asyncio.Task[None] | None = None
        self.worst = 0.0
        self.stalls = 0  # wakeups later than warn_after

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._measure())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _measure(self) -> None:
        while True:
            expected = time.perf_counter() + self._interval
            await asyncio.sleep(self._interval)
            self.record(max(0.0, time.perf_counter() - expected))

    def record(self, lateness: float, now: float | None = None) -> None:
        self._samples.append(lateness)
        self._stamps.append(time.perf_counter() if now is None else now)
        self.worst = max(self.worst, lateness)
        if lateness >= self._warn_after:
            self.stalls += 1
            logger.warning("the event loop stalled for %.2f s", lateness)

    def recent_median(self, seconds: float, now: float | None = None) -> float:
        """Median lateness of the samples of the last ``seconds`` (0 when there are none).

        A stalled loop takes few samples, each very late: counting by time, not by
        number, keeps a busy stretch from hiding among the quiet samples before it.
        """
        since = (time.perf_counter() if now is None else now) - seconds
        recent = sorted(
            late for late, stamp in zip(self._samples, self._stamps, strict=True) if stamp >= since
        )
        return recent[len(recent) // 2] if recent else 0.0

    def stats(self) -> dict[str, Any]:
        """Lateness in milliseconds: median, p99 and max of the window, worst ever."""
        ordered = sorted(self._samples)

        def quantile(q: float) -> float:
            if not ordered:
                return 0.0
            return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return {
            "interval_ms": round(1000 * self._interval),
            "samples": len(ordered),
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
            "max_ms": round(1000 * ordered[-1], 2) if ordered else 0.0,
            "worst_ms": round(1000 * self.worst, 2),
            "stalls": self.stalls,
        }

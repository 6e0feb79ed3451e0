"""Keyframe requests to a publisher, coalesced across its subscribers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class KeyframeRequests:
    """Coalesces keyframe requests for one publisher: at most one per ``interval``.

    Many subscribers asking at once (a join, a switch, packet loss) cost the
    publisher one keyframe; a request inside the quiet interval is deferred to
    its end rather than dropped, so nobody waits forever.
    """

    def __init__(
        self,
        send: Callable[[], Awaitable[None]],
        interval: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._last = -interval
        self._deferred: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.requested = 0

    def request(self) -> None:
        self.requested += 1
        if self._deferred is not None:
            return
        wait = self._last + self._interval - self._clock()
        if wait <= 0:
            self._fire()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._deferred = None
        self._last = self._clock()
        self.sent += 1
        task = asyncio.ensure_future(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

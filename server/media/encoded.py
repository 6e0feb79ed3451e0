"""Keyframe requests to a publisher: coalesced across its subscribers, retried until answered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# Seconds before an unanswered request is repeated; doubled per attempt up to the cap.
RETRY_AFTER = 0.5
RETRY_CAP = 2.0
STUCK_AFTER = 2.0  # an unanswered wait this long is a "stuck hold": counted and logged
STUCK_LOG_EVERY = 30.0


class KeyframeRequests:
    """Keyframe requests for one publisher, at most one per ``interval``, until a keyframe comes.

    Many subscribers asking at once (a join, a switch, packet loss) cost the
    publisher one request; a request inside the quiet interval is deferred to
    its end rather than dropped. An unanswered request is repeated with backoff
    (``RETRY_AFTER`` doubling to ``RETRY_CAP``), as a FIR after the first PLI
    went unheard, because some encoders ignore PLIs for a while (or only honour
    FIR). Retries continue only while the publisher's packets keep coming
    (``activity`` grows): a paused camera answers nothing and needs no nagging.
    """

    def __init__(
        self,
        send: Callable[[int | None], Awaitable[None]],
        interval: float = 0.3,
        *,
        activity: Callable[[], int] = lambda: 0,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send  # send(None) for a PLI, send(sequence_number) for a FIR
        self._interval = interval
        self._activity = activity
        self._name = name
        self._clock = clock
        self._last = -interval
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting_since: float | None = None
        self._activity_at_send = 0
        self._attempts = 0
        self._counted_stuck = False
        self._last_stuck_log = -STUCK_LOG_EVERY
        self.requested = 0
        self.sent = 0  # PLIs and FIRs
        self.firs = 0
        self.stuck = 0
        self.longest_wait = 0.0

    def request(self) -> None:
        """Someone needs a keyframe: send a request now, or at the end of the quiet interval."""
        self.requested += 1
        if self._waiting_since is None:
            self._waiting_since = self._clock()
            self._attempts = 0
            self._counted_stuck = False
        if self._timer is None:
            self._schedule(self._last + self._interval - self._clock())

    def answered(self) -> None:
        """A keyframe arrived: whatever was outstanding is satisfied."""
        if self._waiting_since is None:
            return
        self.longest_wait = max(self.longest_wait, self._clock() - self._waiting_since)
        self._waiting_since = None
        self._cancel_timer()

    def _schedule(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._waiting_since is None:
            return
        activity = self._activity()
        if self._attempts and activity == self._activity_at_send:
            self._waiting_since = None  # nothing flows: wait for the next request
            return
        now = self._clock()
        if self._attempts:  # a late first request (a busy loop) is not the publisher's fault
            self._note_stuck(now - self._waiting_since)
        fir_sequence = self.firs % 256 if self._attempts else None  # FIR once a PLI went unheard
        self._attempts += 1
        self._activity_at_send = activity
        self._last = now
        self.sent += 1
        self.firs += fir_sequence is not None
        task = asyncio.ensure_future(self._send(fir_sequence))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._schedule(min(RETRY_CAP, RETRY_AFTER * 2 ** (self._attempts - 1)))

    def _note_stuck(self, waited: float) -> None:
        if waited < STUCK_AFTER or self._counted_stuck:
            return
        self._counted_stuck = True
        self.stuck += 1
        now = self._clock()
        if now - self._last_stuck_log >= STUCK_LOG_EVERY:
            self._last_stuck_log = now
            logger.warning(
                "%s: no keyframe %.1f s after %d requests (%d stuck holds so far)",
                self._name or "a publisher",
                waited,
                self._attempts,
                self.stuck,
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cancel(self) -> None:
        self._cancel_timer()
        self._waiting_since = None

    def stats(self) -> dict[str, float | int]:
        return {
            "keyframe_requests": self.requested,
            "plis_sent": self.sent - self.firs,
            "firs_sent": self.firs,
            "stuck_holds": self.stuck,
            "longest_keyframe_wait": round(self.longest_wait, 3),
        }

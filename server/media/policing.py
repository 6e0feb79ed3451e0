"""A publisher's bitrate cap: what it is told (REMB), and what happens when it ignores that.

Pure: no aiortc, no I/O. A well-behaved sender lowers its bitrate when a REMB
says so; a hostile or broken one does not, and every subscriber would pay for
its excess. :class:`ByteBudget` lets through at most ``bits_per_second`` on
average (with a second's worth of burst, so a keyframe fits) and drops the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_BURST_BYTES = 32 * 1024  # a keyframe of a small picture, whatever the cap


class ByteBudget:
    """A token bucket in bytes, refilled at ``bits_per_second / 8``."""

    def __init__(self, bits_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = bits_per_second / 8
        self._burst = max(self._rate, MIN_BURST_BYTES)
        self._tokens = self._burst
        self._clock = clock
        self._at = clock()
        self.dropped = 0

    def allows(self, size: int) -> bool:
        """Take ``size`` bytes from the budget, or count a drop when it is spent."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if size <= self._tokens:
            self._tokens -= size
            return True
        self.dropped += 1
        return False


def capped(estimate: int | None, cap: int) -> int | None:
    """``estimate`` (bits/s) held to ``cap`` when there is one (0: no cap)."""
    if not cap:
        return estimate
    return cap if estimate is None else min(estimate, cap)

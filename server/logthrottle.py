"""Rate-limited logging: a flood of identical warnings must not become a flood of log lines.

A client can make the server log on purpose (malformed packets, refused
connections, ``accept()`` failing with EMFILE); hundreds of thousands of lines a
minute cost CPU and disk. :class:`RepeatFilter` lets the first few records of
each message template through, then counts the rest and reports the count with
the next record that gets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BURST = 5  # records of one template let through per window
DEFAULT_WINDOW = 10.0  # seconds
MAX_TEMPLATES = 1024  # templates remembered; beyond, the oldest window is forgotten


@dataclass
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Passes at most ``burst`` records per message template and logger every ``window`` s.

    Records below ``level`` always pass. A template is the first line of the
    unformatted message, so "refused %s from %s" counts as one whatever its
    arguments (asyncio's multi-line reports differ only after the first line).
    """

    def __init__(
        self,
        level: int = logging.WARNING,
        burst: int = DEFAULT_BURST,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._level = level
        self._burst = burst
        self._window = window
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._level:
            return True
        key = (record.name, record.levelno, str(record.msg).split("\n", 1)[0][:200])
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= self._window:
            suppressed = window.suppressed if window else 0
            if window is None and len(self._windows) >= MAX_TEMPLATES:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[key] = _Window(started=now)
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar messages suppressed]"
        if window.passed >= self._burst:
            window.suppressed += 1
            return False
        window.passed += 1
        return True


def throttle_repeats(level: int = logging.WARNING) -> RepeatFilter:
    """Install one RepeatFilter on every handler of the root logger; returns it."""
    repeat_filter = RepeatFilter(level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeat_filter)
    return repeat_filter

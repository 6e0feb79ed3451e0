"""Counters the server keeps about itself, reported by ``GET /stats``."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Monotonic counters; current gauges (connections, rooms) are read live elsewhere."""

    started_monotonic: float = field(default_factory=time.monotonic)
    connections_total: int = 0
    events_total: int = 0
    errors_total: int = 0
    events_by_name: Counter[str] = field(default_factory=Counter)
    errors_by_code: Counter[str] = field(default_factory=Counter)
    moderation_actions: Counter[str] = field(default_factory=Counter)

    def count_event(self, name: str) -> None:
        self.events_total += 1
        self.events_by_name[name] += 1

    def count_error(self, code: str) -> None:
        self.errors_total += 1
        self.errors_by_code[code] += 1

    def count_moderation(self, action: str) -> None:
        """A host's or the admin API's action (``mute_audio``, ``remove``, ``lock``...)."""
        self.moderation_actions[action] += 1

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic

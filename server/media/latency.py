"""How long the server holds a packet: a fixed-bucket histogram of forwarding delays.

Packet arrival to the subscriber's send, per packet and subscriber. Fixed
buckets (from 50 µs, like other SFUs export them) cost one bisect per packet
and can be exported as they are (Prometheus-style cumulative counts).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Upper bounds of the buckets, in seconds; the last bucket is everything above.
BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class LatencyHistogram:
    """Counts of delays per bucket, their sum, and quantiles estimated from the buckets."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0
        self.sum = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def quantile(self, q: float) -> float | None:
        """The delay below which a fraction ``q`` of packets fall (linear within a bucket)."""
        if not self.total:
            return None
        rank = q * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            if count and seen + count >= rank:
                low = self.bounds[index - 1] if index else 0.0
                high = self.bounds[index] if index < len(self.bounds) else self.bounds[-1] * 2
                return low + (high - low) * (rank - seen) / count
            seen += count
        return self.bounds[-1]

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative counts per upper bound (``inf`` last), as metrics exporters want them."""
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative

    def snapshot(self) -> dict[str, Any]:
        """Cumulative buckets, sum and count: what a Prometheus histogram is made of."""
        return {"buckets": self.buckets(), "sum": self.sum, "count": self.total}

    def summary(self) -> dict[str, float | int | None]:
        """Packets measured and p50/p99 in milliseconds (what ``/stats`` shows)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "packets": self.total,
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
        }

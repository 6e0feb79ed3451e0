"""Prometheus metrics (``GET /metrics``), read from the running server when scraped.

Nothing here keeps a second copy of a number the server already has: gauges are
computed from the live roster and media state at scrape time (so they are always
true), and counters come from :class:`~server.stats.Stats` and the media core's
per-publication counters. Only what would otherwise vanish is kept: the counts of
publications that have ended (:class:`PublicationLedger`), so that the totals
never go backwards.

Names follow LiveKit's ``livekit_*`` style with a ``roomrelay_`` prefix.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__
from .context import RoomServer
from .media.publication import Publication
from .media.types import KINDS

logger = logging.getLogger(__name__)

# Per-publication counters that become totals (key in Publication.stats() -> metric).
PUBLICATION_COUNTERS = {
    "keyframes": "keyframes_received",
    "keyframe_requests": "keyframe_requests",
    "plis_sent": "pli",
    "firs_sent": "fir",
    "stuck_holds": "stuck_keyframe_waits",
}


def publication_counts(publication: Publication) -> Counter[str]:
    """One publication's monotonic counters, by metric (frames by kind)."""
    facts = publication.stats()
    counts: Counter[str] = Counter()
    counts[f"frames:{publication.kind}"] = int(facts["frames"])  # type: ignore[call-overload]
    for key, metric in PUBLICATION_COUNTERS.items():
        counts[metric] = int(facts[key])  # type: ignore[call-overload]
    return counts


class PublicationLedger:
    """Every live publication of every room, plus the final counts of the ended ones.

    The SFU tells it about publications the way it tells the audio hub (it is a
    ``PublicationObserver``); the ledger adds no work to the media path.
    """

    def __init__(self) -> None:
        self.live: dict[Publication, str] = {}  # publication -> room
        self._ended: Counter[str] = Counter()

    def publication_added(self, room: str, publication: Publication) -> None:
        self.live[publication] = room

    def publication_removed(self, publication: Publication) -> None:
        if self.live.pop(publication, None) is not None:
            self._ended.update(publication_counts(publication))

    def totals(self) -> Counter[str]:
        """Counts over every publication the server has had, ended or live."""
        totals = Counter(self._ended)
        for publication in self.live:
            totals.update(publication_counts(publication))
        return totals

    def published(self) -> Counter[str]:
        return Counter(publication.kind for publication in self.live)


def latency_histogram(snapshot: Mapping[str, Any]) -> HistogramMetricFamily:
    """``roomrelay_forward_latency_seconds`` from the media core's histogram snapshot.

    The snapshot (``LatencyHistogram.snapshot()``, when the server forwards media)
    is ``{"buckets": [[upper_bound_s, cumulative_count], ...],
    "sum": seconds, "count": n}``, the last bucket's bound being ``inf`` or absent.
    """
    buckets = [(str(float(bound)), float(count)) for bound, count in snapshot["buckets"]]
    count = float(snapshot["count"])
    if not buckets or buckets[-1][0] != "inf":
        buckets.append(("+Inf", count))
    else:
        buckets[-1] = ("+Inf", count)
    return HistogramMetricFamily(
        "roomrelay_forward_latency_seconds",
        "Time from a frame's arrival from its publisher to its hand-over to a subscriber.",
        buckets=buckets,
        sum_value=float(snapshot["sum"]),
    )


class RoomRelayCollector(Collector):
    """Builds every ``roomrelay_*`` metric from the live server at each scrape."""

    def __init__(self, server: RoomServer, ledger: PublicationLedger) -> None:
        self._server = server
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        server = self._server
        roster = server.roster
        rooms = roster.local_rooms()  # this node's share, in a cluster: they add up
        media = server.media.stats()

        info = InfoMetricFamily("roomrelay_build", "The running roomrelay version and mode.")
        info.add_metric([], {"version": __version__, "media": server.media.mode})
        yield info
        yield GaugeMetricFamily("roomrelay_rooms", "Rooms with participants.", value=len(rooms))
        yield GaugeMetricFamily(
            "roomrelay_participants",
            "Participants in rooms.",
            value=sum(roster.local_count(name) for name in rooms),
        )
        yield GaugeMetricFamily(
            "roomrelay_connections", "Open Socket.IO connections.", value=len(roster)
        )
        yield CounterMetricFamily(
            "roomrelay_connections_accepted",
            "Socket.IO connections accepted since start.",
            value=server.stats.connections_total,
        )
        yield labelled_counter(
            "roomrelay_events",
            "Socket.IO events received, by name.",
            "event",
            server.stats.events_by_name.items(),
        )
        yield labelled_counter(
            "roomrelay_errors",
            "Requests refused with an error, by code.",
            "code",
            server.stats.errors_by_code.items(),
        )
        yield labelled_counter(
            "roomrelay_moderation_actions",
            "Moderation actions by hosts and the admin API, by action.",
            "action",
            server.stats.moderation_actions.items(),
        )
        if server.webhooks is not None:
            yield from webhook_metrics(server.webhooks.report())
        yield from self._media_metrics(media)

    def _media_metrics(self, media: Mapping[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "roomrelay_peer_connections",
            "WebRTC peer connections the server holds (relay mode).",
            value=media.get("peer_connections", 0),
        )
        yield GaugeMetricFamily(
            "roomrelay_subscriptions",
            "Published tracks being sent to a subscriber (relay mode).",
            value=media.get("subscriptions", 0),
        )
        published = self._ledger.published()
        yield by_kind(
            GaugeMetricFamily(
                "roomrelay_tracks_published",
                "Tracks published to the server, by kind.",
                labels=["kind"],
            ),
            {kind: published[kind] for kind in KINDS},
        )
        totals = self._ledger.totals()
        yield by_kind(
            CounterMetricFamily(
                "roomrelay_frames_received",
                "Encoded frames received from publishers, by kind (forward mode).",
                labels=["kind"],
            ),
            {kind: totals[f"frames:{kind}"] for kind in KINDS},
        )
        yield CounterMetricFamily(
            "roomrelay_keyframes_received",
            "Video keyframes received from publishers.",
            value=totals["keyframes_received"],
        )
        yield CounterMetricFamily(
            "roomrelay_keyframe_requests",
            "Keyframe requests from subscribers and the server, before coalescing.",
            value=totals["keyframe_requests"],
        )
        yield CounterMetricFamily(
            "roomrelay_pli",
            "Picture loss indications (keyframe requests) sent to publishers.",
            value=totals["pli"],
        )
        yield CounterMetricFamily(
            "roomrelay_fir",
            "Full intra requests sent to publishers, after a PLI went unanswered.",
            value=totals["fir"],
        )
        yield CounterMetricFamily(
            "roomrelay_stuck_keyframe_waits",
            "Keyframe requests still unanswered after 2 s while the publisher kept sending.",
            value=totals["stuck_keyframe_waits"],
        )
        latency = self._server.media.forward_latency()
        if latency is not None:
            yield latency_histogram(latency.snapshot())


def webhook_metrics(report: Mapping[str, Any]) -> Iterator[Metric]:
    """Webhook deliveries by outcome, events queued by name, and the current backlog."""
    yield labelled_counter(
        "roomrelay_webhook_deliveries",
        "Webhook delivery attempts' outcomes: delivered, retried, failed (gave up), dropped"
        " (queue full).",
        "outcome",
        ((outcome, report[outcome]) for outcome in ("delivered", "retried", "failed", "dropped")),
    )
    yield labelled_counter(
        "roomrelay_webhook_events",
        "Webhook events queued for delivery, by event.",
        "event",
        report["by_event"].items(),
    )
    yield GaugeMetricFamily(
        "roomrelay_webhook_queue", "Webhook events waiting to be delivered.", value=report["queued"]
    )


Family = TypeVar("Family", GaugeMetricFamily, CounterMetricFamily)


def by_kind(family: Family, values: Mapping[str, int]) -> Family:
    """One sample per media kind, zero included, so that dashboards see both series."""
    for kind in KINDS:
        family.add_metric([kind], values[kind])
    return family


def labelled_counter(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value_label, value in sorted(values):
        family.add_metric([value_label], value)
    return family


def metrics_registry(server: RoomServer, ledger: PublicationLedger) -> CollectorRegistry:
    """A registry of our own (not the library's global one): roomrelay, process, Python."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RoomRelayCollector(server, ledger))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def add_metrics_routes(
    app: web.Application, registry: CollectorRegistry, *, host: str, port: int | None
) -> None:
    """``GET /metrics`` on the main port, or only on its own ``host:port`` when given.

    A port of its own lets an operator keep the metrics on a private interface.
    """
    handler = make_aiohttp_handler(registry)
    if port is None:
        app.router.add_get("/metrics", handler)
        return
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", handler)
    runner = web.AppRunner(metrics_app, access_log=None)

    async def start(app: web.Application) -> None:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        logger.info("metrics on http://%s:%d/metrics", host, port)

    async def stop(app: web.Application) -> None:
        await runner.cleanup()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

"""Each participant's uplink as the server sees it: loss, round trip, bitrate, frame rate.

A browser measures what reaches it; only the server can tell whether a blurry or
frozen tile is that publisher's own uplink or the viewer's downlink. Every few
seconds a room samples each publishing peer's public aiortc statistics (its
receivers' ``getStats()``: packets received and lost; a sender's: the round trip
from the peer's receiver reports) and its publications' counters, and reports the
change since the previous sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiortc.stats import RTCInboundRtpStreamStats, RTCRemoteInboundRtpStreamStats

from .peer import MediaPeer
from .types import UplinkQuality

QUALITY_INTERVAL = 2.0  # seconds between reports, as often as the page samples its own view


def quality_level(rtt: float | None, loss: float) -> str:
    """``good``, ``fair`` or ``poor`` (the bundled page's thresholds, rtt in seconds)."""
    rtt = rtt or 0.0
    if rtt > 0.5 or loss > 0.08:
        return "poor"
    if rtt > 0.25 or loss > 0.02:
        return "fair"
    return "good"


@dataclass(frozen=True)
class _Counters:
    at: float
    received: int
    lost: int
    octets: int
    frames: int


async def round_trip(peer: MediaPeer) -> float | None:
    """Seconds, from the peer's receiver reports on a slot the server sends it (one path)."""
    for slot in peer.slots:
        for stat in (await slot.transceiver.sender.getStats()).values():
            if isinstance(stat, RTCRemoteInboundRtpStreamStats) and stat.roundTripTime:
                return float(stat.roundTripTime)
    return None


class UplinkMeter:
    """Turns cumulative counters into per-interval figures, peer by peer."""

    def __init__(self) -> None:
        self._previous: dict[str, _Counters] = {}

    def forget(self, peer_id: str) -> None:
        self._previous.pop(peer_id, None)

    async def sample(self, peer: MediaPeer) -> UplinkQuality | None:
        """The peer's uplink since the last sample; None on the first one or with nothing sent."""
        publications = list(peer.publications.values())
        if peer.pc is None or peer.pc.connectionState != "connected" or not publications:
            self.forget(peer.peer_id)
            return None
        received = lost = 0
        for publication in publications:
            for stat in (await publication.receiver.getStats()).values():
                if isinstance(stat, RTCInboundRtpStreamStats):
                    received += stat.packetsReceived
                    lost += max(0, stat.packetsLost)
        rtt = await round_trip(peer)
        now = _Counters(
            at=time.monotonic(),
            received=received,
            lost=lost,
            octets=sum(p.octets_received for p in publications),
            frames=sum(p.frames_received for p in publications if p.kind == "video"),
        )
        before = self._previous.get(peer.peer_id)
        self._previous[peer.peer_id] = now
        if before is None or now.at <= before.at:
            return None
        seconds = now.at - before.at
        lost_now = max(0, now.lost - before.lost)
        expected = lost_now + max(0, now.received - before.received)
        loss = lost_now / expected if expected else 0.0
        has_video = any(p.kind == "video" for p in publications)
        return UplinkQuality(
            peer_id=peer.peer_id,
            level=quality_level(rtt, loss),
            loss=round(loss, 4),
            rtt_ms=None if rtt is None else round(rtt * 1000, 1),
            kbps=round(8 * max(0, now.octets - before.octets) / seconds / 1000, 1),
            fps=round(max(0, now.frames - before.frames) / seconds, 1) if has_video else None,
        )

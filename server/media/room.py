"""The media side of one room: its participants' peers, their tracks, its active speaker."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from aiortc import RTCDataChannel, RTCIceServer
from aiortc.contrib.media import MediaRelay

from ..tasks import cancel_and_wait
from ..validation import ProtocolError
from .aiortc_hooks import observe_audio_levels
from .datachannels import DataChannelBridge
from .latency import LatencyHistogram
from .peer import MediaPeer, PeerHooks
from .publication import Publication, PublicationObserver
from .quality import QUALITY_INTERVAL, UplinkMeter
from .speaker import SpeakerDetector
from .types import (
    KINDS,
    CloseReason,
    Kind,
    MediaConfig,
    MediaListener,
    RateGate,
    SlotPolicy,
)

logger = logging.getLogger(__name__)

SPEAKER_INTERVAL = 0.25  # seconds between active-speaker decisions


class MediaRoom:
    """Owns the peers of one room and keeps their slots in line with its publications.

    Every change (a publication came or went, a connection closed, the speaker
    changed, someone joined or left) ends in :meth:`reconcile`, which is
    idempotent: it plans every peer's slots from the room's current state,
    applies the plan, and tells each participant what changed for it.
    """

    def __init__(
        self,
        name: str,
        *,
        listener: MediaListener,
        observers: list[PublicationObserver],
        relay: MediaRelay,
        latency: LatencyHistogram,
        config: MediaConfig,
        ice_servers: list[RTCIceServer],
    ) -> None:
        self.name = name
        self._listener = listener
        self._observers = observers
        self._relay = relay
        self._latency = latency
        self._config = config
        self._ice_servers = ice_servers
        self.peers: dict[str, MediaPeer] = {}  # by peer_id: the one index of the room's peers
        self.muted: set[tuple[str, Kind]] = set()  # (peer_id, kind) not forwarded to anyone
        self.speaker = SpeakerDetector()
        self.datachannels = DataChannelBridge(self._refuse_message)
        self._speaker_task: asyncio.Task[None] | None = None  # from the first audio on
        self._uplinks = UplinkMeter()
        self._quality_task: asyncio.Task[None] | None = None  # from the first publication on

    # -- membership ---------------------------------------------------------------

    def add(self, peer_id: str, policy: SlotPolicy, rate_gate: RateGate) -> MediaPeer:
        """Register a participant; it may offer from now on."""
        peer = MediaPeer(
            peer_id,
            self.name,
            policy=policy,
            rate_gate=rate_gate,
            listener=self._listener,
            hooks=self._hooks_for(peer_id),
            relay=self._relay,
            latency=self._latency,
            config=self._config,
            ice_servers=self._ice_servers,
        )
        self.peers[peer_id] = peer
        self.speaker.add(peer_id)
        return peer

    async def remove(self, peer_id: str, reason: CloseReason) -> None:
        """Close a participant's media and re-plan the others."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        self.speaker.remove(peer_id)
        self._uplinks.forget(peer_id)
        self.muted -= {(peer_id, kind) for kind in KINDS}
        await peer.close(reason)
        await self.reconcile()

    def _hooks_for(self, peer_id: str) -> PeerHooks:
        return PeerHooks(
            assign_slots=self._assign,
            changed=self.reconcile,
            publication_added=self._publication_added,
            publication_removed=self._publication_removed,
            datachannel_opened=lambda channel: self._datachannel_opened(peer_id, channel),
            connection_closed=lambda: self.datachannels.detach(peer_id),
        )

    # -- publications ---------------------------------------------------------------

    def publications(self) -> list[Publication]:
        return [
            publication
            for peer in self.peers.values()
            for publication in peer.publications.values()
        ]

    def published(self, *, excluding: str | None = None) -> dict[Kind, int]:
        """How many audio and video tracks the room's participants publish."""
        kinds = Counter(p.kind for p in self.publications() if p.peer_id != excluding)
        return {kind: kinds[kind] for kind in KINDS}

    def _publication_added(self, publication: Publication) -> None:
        if self._quality_task is None:
            self._quality_task = asyncio.create_task(self._report_quality())
        if publication.kind == "audio":
            peer_id = publication.peer_id
            observe_audio_levels(
                publication.receiver, lambda level: self.speaker.level(peer_id, level)
            )
            if self._speaker_task is None:
                self._speaker_task = asyncio.create_task(self._follow_speaker())
        for observer in self._observers:
            observer.publication_added(self.name, publication)

    def _publication_removed(self, publication: Publication) -> None:
        for observer in self._observers:
            observer.publication_removed(publication)

    # -- the plan ---------------------------------------------------------------------

    def _assign(self) -> None:
        """Re-plan every peer's slots from the room's publications (no I/O)."""
        publications = [p for p in self.publications() if (p.peer_id, p.kind) not in self.muted]
        order = self.speaker.order
        for peer in self.peers.values():
            peer.assign([p for p in publications if p.peer_id != peer.peer_id], order)

    async def reconcile(self) -> None:
        """Desired slots vs actual: apply the difference, then tell whoever it concerns."""
        self._assign()
        for peer in list(self.peers.values()):
            await peer.report(self.published(excluding=peer.peer_id))

    async def _follow_speaker(self) -> None:
        while True:
            await asyncio.sleep(SPEAKER_INTERVAL)
            if self.speaker.evaluate():
                logger.debug("active speaker in %r: %s", self.name, self.speaker.dominant)
                await self._listener.speaker_changed(self.name, self.speaker.dominant)
                await self.reconcile()

    async def _report_quality(self) -> None:
        """Every few seconds, each publisher's uplink as the server receives it."""
        while True:
            await asyncio.sleep(QUALITY_INTERVAL)
            reports = []
            for peer in list(self.peers.values()):
                try:
                    report = await self._uplinks.sample(peer)
                except Exception:  # a connection closing meanwhile: no figure this time
                    logger.debug("no uplink figures for %s", peer.peer_id, exc_info=True)
                    continue
                if report is not None:
                    reports.append(report)
            if reports:
                await self._listener.uplink_quality(self.name, reports)

    # -- data channels -------------------------------------------------------------------

    def _datachannel_opened(self, peer_id: str, channel: RTCDataChannel) -> None:
        peer = self.peers.get(peer_id)
        if peer is not None:
            self.datachannels.attach(peer_id, channel, peer.rate_gate)

    async def _refuse_message(self, peer_id: str, error: ProtocolError) -> None:
        await self._listener.error(peer_id, "datachannel", error)

    # -- the end --------------------------------------------------------------------------

    async def close(self) -> None:
        """Close every peer (server shutdown); stop following the speaker and the uplinks."""
        for peer_id in list(self.peers):
            peer = self.peers.pop(peer_id)
            await peer.close(CloseReason.SHUTDOWN)
        for task in (self._speaker_task, self._quality_task):
            await cancel_and_wait(task)

    def stats(self) -> dict[str, Any]:
        return {
            "peers": [peer.stats() for peer in self.peers.values() if peer.offered],
            "publications": len(self.publications()),
            "active_speaker": self.speaker.dominant,
            "datachannels": self.datachannels.stats(),
        }

"""The server's half of one participant's ``RTCPeerConnection``.

The browser always makes the offer and the server only answers (server-made
re-offers trip Chrome, see shared/notes/aiortc-relay.md). All negotiation work
for a participant runs through one queue, so offers and candidates are applied
in the order they were sent and never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
)
from aiortc.contrib.media import MediaRelay
from aiortc.exceptions import InvalidStateError

from ..tasks import cancel_and_wait
from ..validation import ProtocolError
from .aiortc_hooks import (
    answer_as_dtls_server,
    limit_rtp_sources,
    negotiated_codecs,
    prefer_codecs,
    set_stream_id,
)
from .latency import LatencyHistogram
from .offer import MediaSection, ParsedOffer, stream_ids_by_mid
from .planning import plan_every_source, plan_follow_speaker
from .publication import Publication
from .slot import Slot
from .types import (
    KINDS,
    CloseReason,
    Kind,
    MediaConfig,
    MediaListener,
    RateGate,
    SlotInfo,
    SlotPolicy,
)

logger = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]

# RTP sources (SSRCs) one connection may send: camera, microphone, screen and its audio,
# each with RTX and up to three simulcast layers, fit; a flood of made-up ones does not.
MAX_SSRCS_PER_CONNECTION = 24

# Codec order we steer every m-line to, so that everyone shares the first one.
CODEC_PREFERENCE = {
    "video": ["video/VP8", "video/H264"],
    "audio": ["audio/opus", "audio/G722", "audio/PCMU", "audio/PCMA"],
}


CLOSE_TIMEOUT = 5.0  # seconds aiortc may take to close a connection before we stop waiting
# Seconds a participant's leave waits for its work queue to stop: whatever the queue is
# stuck in, the participant must not stay in its room as a ghost.
WORK_STOP_TIMEOUT = 5.0


async def close_within(pc: RTCPeerConnection, timeout: float, peer_id: str) -> None:
    """Close ``pc``, waiting at most ``timeout``: a stuck close must not hold up a leave.

    The close goes on in the background (shielded); whatever it still holds is the
    connection's own, and nothing else waits for it.
    """
    try:
        await asyncio.wait_for(asyncio.shield(pc.close()), timeout)
    except TimeoutError:
        logger.warning(
            "closing %s's media connection takes over %.0f s; moving on", peer_id, timeout
        )


def server_direction(section: MediaSection) -> str:
    """Our direction for an m-line: we receive what the client sends and vice versa."""
    sends, receives = section.client_receives, section.client_sends
    return {
        (True, True): "sendrecv",
        (True, False): "sendonly",
        (False, True): "recvonly",
        (False, False): "inactive",
    }[(sends, receives)]


def closed_meanwhile() -> ProtocolError:
    return ProtocolError(
        "connection_closed",
        "the media connection closed while this offer was handled; "
        "make a new peer connection and offer again",
    )


@dataclass(frozen=True)
class PeerHooks:
    """How a peer tells the room that owns it about changes; the room sets them.

    The peer never holds its room: it knows the room's name only.
    """

    assign_slots: Callable[[], None]  # re-plan every slot of the room now (no I/O)
    changed: Callable[[], Awaitable[None]]  # reconcile the room and tell everyone
    publication_added: Callable[[Publication], None]
    publication_removed: Callable[[Publication], None]
    datachannel_opened: Callable[[RTCDataChannel], None]
    connection_closed: Callable[[], None]  # the peer's data channels are gone


class MediaPeer:
    """One participant's media session: its publications and its receive slots."""

    def __init__(
        self,
        peer_id: str,
        room: str,
        *,
        policy: SlotPolicy,
        rate_gate: RateGate,
        listener: MediaListener,
        hooks: PeerHooks,
        relay: MediaRelay,
        latency: LatencyHistogram,
        config: MediaConfig,
        ice_servers: list[RTCIceServer],
    ) -> None:
        self.peer_id = peer_id
        self.room = room  # the room's name: a peer never holds its room
        self.policy = policy
        self.rate_gate = rate_gate
        self._listener = listener
        self._hooks = hooks
        self._relay = relay
        self._latency = latency
        self._forwarding = config.forwarding
        self._max_publish_bitrate = config.max_publish_bitrate
        self._connect_timeout = config.connect_timeout
        self._ice_servers = ice_servers
        self.pc: RTCPeerConnection | None = None
        self.publications: dict[str, Publication] = {}
        self.slots: list[Slot] = []
        self.offered = False  # whether the participant ever made an offer
        self._announced: dict[Slot, str | None] = {}  # stream id each slot had in our answer
        self._missing: Counter[Kind] = Counter()
        self._slots_reported: list[SlotInfo] | None = None  # the last slots_changed
        self._invited: dict[Kind, int] | None = None  # slots asked of a peer with no connection
        self._closed_for: CloseReason | None = None  # why its connection went, until it re-offers
        self._remote_ufrag: str | None = None
        self._queued_ufrags: list[str] = []
        self._queued_candidates = 0  # trickled candidates waiting in the queue
        self._waiting_offer: ParsedOffer | None = None  # queued, not yet being applied
        self.superseded_offers = 0
        self._settled = asyncio.Event()  # the connection is up, or it closed
        self._queue: asyncio.Queue[tuple[str, Work]] = asyncio.Queue()
        self._worker = asyncio.create_task(self._run_queue())
        self._watchdog: asyncio.Task[None] | None = None
        self.negotiating = False
        self.closed = False
        self.refused_rtp = 0  # packets dropped from SSRCs over MAX_SSRCS_PER_CONNECTION

    # -- the work queue ----------------------------------------------------------

    def submit_offer(self, offer: ParsedOffer) -> None:
        """Queue an offer; one still waiting for its turn is replaced, not kept.

        At most one offer per connection waits, however many arrive: each one
        can hold tens of kilobytes, and only the newest matters (an older one
        comes from a connection the client has already given up).
        """
        self.offered = True
        self._closed_for = None
        superseded, self._waiting_offer = self._waiting_offer, offer
        self._queued_ufrags.append(offer.ice_ufrag)
        if superseded is None:
            self._queue.put_nowait(("offer", self._negotiate_waiting))
        else:
            self._queued_ufrags.remove(superseded.ice_ufrag)
            self.superseded_offers += 1

    async def add_candidate(self, candidate: RTCIceCandidate | None) -> None:
        """Apply a trickled candidate now if it belongs to the current session.

        Otherwise it waits in the queue behind the offer that starts its session.
        """
        if self.pc is None and not self._queued_ufrags:
            raise ProtocolError("no_pending_offer", "send an offer before ICE candidates")
        current = all(ufrag == self._remote_ufrag for ufrag in self._queued_ufrags)
        # Never ahead of a candidate still queued: an end-of-candidates overtaking one would
        # make ICE refuse it (and fail, when it was the only one).
        applicable = self.pc is not None and self.pc.remoteDescription is not None
        if applicable and current and not self._queued_candidates:
            await self._add_candidate(candidate)
        else:
            self._queued_candidates += 1
            self._queue.put_nowait(("ice", lambda: self._add_queued_candidate(candidate)))

    async def _add_queued_candidate(self, candidate: RTCIceCandidate | None) -> None:
        try:
            await self._add_candidate(candidate)
        finally:
            self._queued_candidates -= 1

    async def _run_queue(self) -> None:
        while True:
            event, work = await self._queue.get()
            try:
                await work()
            except ProtocolError as error:
                await self._listener.error(self.peer_id, event, error)
            except Exception:
                logger.exception("%s failed for peer %s", event, self.peer_id)
                await self._listener.error(
                    self.peer_id,
                    event,
                    ProtocolError("internal_error", f"the server could not handle this {event}"),
                )

    # -- negotiation ---------------------------------------------------------------

    async def _negotiate_waiting(self) -> None:
        offer, self._waiting_offer = self._waiting_offer, None
        if offer is not None:
            await self._negotiate(offer)

    async def _negotiate(self, offer: ParsedOffer) -> None:
        try:
            await self._apply_offer(offer)
        finally:
            self._queued_ufrags.remove(offer.ice_ufrag)
        await self._hooks.changed()

    async def _apply_offer(self, offer: ParsedOffer) -> None:
        if self.pc is not None and offer.ice_ufrag != self._remote_ufrag:
            await self.close_connection(CloseReason.REPLACED)
        fresh = self.pc is None
        if fresh:
            self._open_connection()
        else:
            await self._wait_connected()
        pc = self.pc
        if pc is None:
            raise closed_meanwhile()
        self.negotiating = True
        try:
            try:
                await pc.setRemoteDescription(offer.description)
            except Exception as exc:
                if pc is not self.pc:
                    raise closed_meanwhile() from None
                if fresh:
                    await self.close_connection(CloseReason.OFFER_REJECTED)
                raise ProtocolError(
                    "invalid_sdp", f"the offer could not be applied: {exc}"
                ) from None
            self._remote_ufrag = offer.ice_ufrag
            self._police_rtp_sources(pc)
            await self._sync_transceivers(pc, offer)
            self._hooks.assign_slots()
            self._steer_new_slots()
            answer_as_dtls_server(pc)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            if pc is not self.pc:
                raise closed_meanwhile()
            announced = stream_ids_by_mid(pc.localDescription.sdp)
            self._announced = {slot: announced.get(slot.mid or "") for slot in self.slots}
            for slot in self.slots:
                slot.codec = slot.codec or slot.codec_mime
            await self._listener.answer(self.peer_id, pc.localDescription.sdp)
        except InvalidStateError:
            if pc is self.pc:
                raise
            raise closed_meanwhile() from None
        finally:
            self.negotiating = False

    async def _wait_connected(self) -> None:
        """Renegotiating before DTLS is up leaves new senders unstarted: wait for it.

        ``_settled`` is also set when the connection closes, so a re-offer waiting
        here learns about it at once instead of after the timeout.
        """
        try:
            await asyncio.wait_for(self._settled.wait(), self._connect_timeout)
        except TimeoutError:
            raise ProtocolError(
                "media_timeout", "the media connection did not come up; offer again"
            ) from None

    async def _add_candidate(self, candidate: RTCIceCandidate | None) -> None:
        if self.pc is None or self.pc.remoteDescription is None:
            return  # its session was replaced or closed meanwhile: nothing to apply it to
        # aioice refuses candidates after end-of-candidates (ValueError): harmless.
        with contextlib.suppress(ValueError):
            await self.pc.addIceCandidate(candidate)

    def _open_connection(self) -> None:
        # Always an explicit list: aiortc would otherwise default to a public STUN server.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._settled.clear()
        pc = self.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            if pc.connectionState == "connected":
                self._settled.set()
            elif pc.connectionState == "failed":
                await self.close_connection(CloseReason.CONNECTION_FAILED)
            elif pc.connectionState == "closed":
                await self.close_connection(CloseReason.CONNECTION_CLOSED)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if pc is self.pc:
                self._hooks.datachannel_opened(channel)

        self._watchdog = asyncio.create_task(self._watch_connect(pc))

    async def _watch_connect(self, pc: RTCPeerConnection) -> None:
        try:
            await asyncio.wait_for(self._settled.wait(), self._connect_timeout)
        except TimeoutError:
            if pc is self.pc:
                await self.close_connection(CloseReason.CONNECT_TIMEOUT)

    async def _sync_transceivers(self, pc: RTCPeerConnection, offer: ParsedOffer) -> None:
        """Publications for what the client sends, slots for what it wants to receive.

        Codecs are steered first: VP8 (then H.264) so that publishers and
        subscribers share one codec and frames can be forwarded untouched; a
        slot keeps the codec of its first answer, since its sender cannot change.
        """
        for transceiver in pc.getTransceivers():
            section = offer.section(transceiver.mid)
            if section is None:
                continue
            slot = self._slot_of(transceiver)
            locked = [slot.codec] if slot is not None and slot.codec else []
            prefer_codecs(transceiver, [*locked, *CODEC_PREFERENCE[transceiver.kind]])
            await self._sync_publication(transceiver, section)
            if pc is not self.pc:
                raise closed_meanwhile()
            self._sync_slot(transceiver, section)
            transceiver.direction = server_direction(section)

    def _police_rtp_sources(self, pc: RTCPeerConnection) -> None:
        for transceiver in pc.getTransceivers():
            transport = transceiver.receiver.transport
            if transport is not None:
                limit_rtp_sources(transport, MAX_SSRCS_PER_CONNECTION, self._refuse_rtp_source)

    def _refuse_rtp_source(self, ssrc: int) -> None:
        if not self.refused_rtp:
            logger.warning(
                "%s sends RTP from more than %d sources; dropping the others",
                self.peer_id,
                MAX_SSRCS_PER_CONNECTION,
            )
        self.refused_rtp += 1

    def _slot_of(self, transceiver: RTCRtpTransceiver) -> Slot | None:
        return next((s for s in self.slots if s.transceiver is transceiver), None)

    def _steer_new_slots(self) -> None:
        """Give a new receive-only slot its source's codec when the client supports it.

        This is how an H.264-only publisher reaches a VP8-and-H.264 subscriber
        without transcoding. Send-and-receive m-lines keep the common order, since
        reordering them would also change what the client sends.
        """
        for slot in self.slots:
            source = slot.source
            if slot.codec or source is None or slot.mid in self.publications:
                continue
            supported = {c.mimeType.lower() for c in negotiated_codecs(slot.transceiver)}
            if source.mime_type != slot.codec_mime and source.mime_type in supported:
                prefer_codecs(slot.transceiver, [source.mime_type, *CODEC_PREFERENCE[slot.kind]])
                slot.attach(source, again=True)

    async def _sync_publication(
        self, transceiver: RTCRtpTransceiver, section: MediaSection
    ) -> None:
        mid = section.mid
        publication = self.publications.get(mid)
        if section.client_sends and publication is None and transceiver.receiver.track:
            publication = Publication(
                self.peer_id,
                transceiver,
                self._relay,
                forward=self._forwarding,
                source=section.source,
                max_bitrate=self._max_publish_bitrate,
            )
            await publication.start()
            if transceiver not in (self.pc.getTransceivers() if self.pc else ()):
                await publication.close()  # the connection closed meanwhile
                return
            self.publications[mid] = publication
            self._hooks.publication_added(publication)
        elif not section.client_sends and publication is not None:
            del self.publications[mid]
            self._hooks.publication_removed(publication)
            await publication.close()

    def _sync_slot(self, transceiver: RTCRtpTransceiver, section: MediaSection) -> None:
        slot = self._slot_of(transceiver)
        if section.client_receives and slot is None:
            slot = Slot(transceiver, forwarding=self._forwarding, latency=self._latency)
            transceiver.sender.replaceTrack(slot)
            self.slots.append(slot)
        elif not section.client_receives and slot is not None:
            self.slots.remove(slot)
            slot.close()

    # -- slot assignment and what the participant must be told -----------------------

    def assign(self, sources: list[Publication], speaker_order: list[str]) -> None:
        """Match the room's other publications to this peer's slots, by policy (no I/O)."""
        if self.policy is SlotPolicy.EVERY_SOURCE:
            plan, self._missing = plan_every_source(self.slots, sources)
        else:
            plan, self._missing = plan_follow_speaker(self.slots, sources, speaker_order), Counter()
        for slot, source in plan.items():
            if slot.source is source:
                continue
            if source is None:
                slot.detach()
            else:
                slot.attach(source)
                set_stream_id(slot.transceiver, source.peer_id)

    def slots_wanted(self) -> dict[Kind, int] | None:
        """Receive slots per kind the client should have, or None when nothing is missing.

        Also when a slot changed publisher since our last answer: only a new
        answer can announce the slot's new MediaStream id.
        """
        stale = any(
            slot.source is not None and slot.source_peer != self._announced.get(slot)
            for slot in self.slots
        )
        if not self._missing and not stale:
            return None
        have = Counter(slot.kind for slot in self.slots)
        return {kind: have[kind] + self._missing[kind] for kind in KINDS}

    async def report(self, published_by_others: dict[Kind, int]) -> None:
        """Tell the participant what changed for it: slot owners, then missing slots.

        A participant that never offered (a viewer) is invited to connect once
        there is something to receive; one that is negotiating or closing hears
        nothing until it is done.
        """
        if self.closed or self.negotiating:
            return
        if self.pc is None:
            wanted = published_by_others
            if (
                self.policy is SlotPolicy.EVERY_SOURCE
                and not self.offered
                and any(wanted.values())
                and wanted != self._invited
            ):
                self._invited = dict(wanted)
                await self._listener.renegotiation_needed(self.peer_id, wanted)
            return
        slots = [slot.info() for slot in self.slots]
        if slots != self._slots_reported:
            self._slots_reported = slots
            await self._listener.slots_changed(self.peer_id, slots)
        missing = self.slots_wanted()
        if missing is not None:
            await self._listener.renegotiation_needed(self.peer_id, missing)

    def forget_reports(self) -> CloseReason | None:
        """Report everything afresh next time (the participant may have missed it).

        Returns why its connection closed, if it did and the participant has not
        offered again since: it needs telling once more.
        """
        self._slots_reported = None
        self._invited = None
        return self._closed_for if self.pc is None else None

    # -- teardown -----------------------------------------------------------------------

    async def close_connection(self, reason: CloseReason) -> None:
        """Close the RTCPeerConnection and free everything it carried; the peer may offer again."""
        pc, self.pc = self.pc, None
        if pc is None:
            return
        logger.info("closing media of %s: %s", self.peer_id, reason.value)
        self._settled.set()  # wakes a re-offer waiting for this connection
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        self._remote_ufrag = None
        publications, self.publications = list(self.publications.values()), {}
        slots, self.slots = self.slots, []
        for publication in publications:
            self._hooks.publication_removed(publication)
            await publication.close()
        for slot in slots:
            slot.close()
        self._announced = {}
        self._slots_reported = None
        self._hooks.connection_closed()
        await close_within(pc, CLOSE_TIMEOUT, self.peer_id)
        if not self.closed:
            await self._hooks.changed()
            if reason.client_must_reconnect:
                self._closed_for = reason
                await self._listener.media_closed(self.peer_id, reason)

    async def close(self, reason: CloseReason) -> None:
        """The participant left: stop the work queue and release all media."""
        if self.closed:
            return
        self.closed = True
        if self._worker is not asyncio.current_task():
            try:
                await asyncio.wait_for(cancel_and_wait(self._worker), WORK_STOP_TIMEOUT)
            except TimeoutError:
                logger.warning(
                    "%s's media work did not stop within %.0f s; closing anyway",
                    self.peer_id,
                    WORK_STOP_TIMEOUT,
                )
        await self.close_connection(reason)

    def stats(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "connection": self.pc.connectionState if self.pc else None,
            "published": sorted(p.kind for p in self.publications.values()),
            "publications": {mid: p.stats() for mid, p in self.publications.items()},
            "slots": len(self.slots),
            "receiving": sum(1 for slot in self.slots if slot.source is not None),
            "receiving_from": [slot.source_peer for slot in self.slots],
            "refused_rtp_packets": self.refused_rtp,
            "superseded_offers": self.superseded_offers,
            "slot_details": {
                slot.mid: {"from": slot.source_peer, **slot.stats()} for slot in self.slots
            },
        }

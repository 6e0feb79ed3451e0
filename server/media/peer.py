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
from typing import TYPE_CHECKING, Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
)

from ..rooms import Dialect, Participant
from ..validation import ProtocolError
from .aiortc_hooks import negotiated_codecs, observe_audio_levels, prefer_codecs, set_stream_id
from .offer import MediaSection, ParsedOffer
from .outbound import SlotTrack
from .publication import Publication
from .slots import Slot, apply_plan, plan_every_source, plan_follow_speaker

if TYPE_CHECKING:
    from .relay import RelayRoom

logger = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]

# Codec order we steer every m-line to, so that everyone shares the first one.
CODEC_PREFERENCE = {
    "video": ["video/VP8", "video/H264"],
    "audio": ["audio/opus", "audio/G722", "audio/PCMU", "audio/PCMA"],
}


def server_direction(section: MediaSection) -> str:
    """Our direction for an m-line: we receive what the client sends and vice versa."""
    sends, receives = section.client_receives, section.client_sends
    return {
        (True, True): "sendrecv",
        (True, False): "sendonly",
        (False, True): "recvonly",
        (False, False): "inactive",
    }[(sends, receives)]


class MediaPeer:
    """One participant's media session: its publications and its receive slots."""

    def __init__(
        self,
        participant: Participant,
        room: RelayRoom,
        *,
        forwarding: bool,
        connect_timeout: float,
        ice_servers: list[RTCIceServer],
    ) -> None:
        self.participant = participant
        self.room = room
        self._forwarding = forwarding
        self._connect_timeout = connect_timeout
        self._ice_servers = ice_servers
        self.pc: RTCPeerConnection | None = None
        self.publications: dict[str, Publication] = {}
        self.slots: list[Slot] = []
        self._announced: dict[Slot, str | None] = {}  # stream id each slot had in our answer
        self._missing: Counter[str] = Counter()
        self._tracks_sent: dict[str, Any] | None = None  # the last ``tracks`` the client got
        self._remote_ufrag: str | None = None
        self._queued_ufrags: list[str] = []
        self._connected = asyncio.Event()
        self._queue: asyncio.Queue[tuple[str, Work]] = asyncio.Queue()
        self._worker = asyncio.create_task(self._run_queue())
        self._watchdog: asyncio.Task[None] | None = None
        self.negotiating = False
        self.closed = False

    @property
    def peer_id(self) -> str:
        return self.participant.peer_id

    # -- the work queue ----------------------------------------------------------

    def submit_offer(self, offer: ParsedOffer) -> None:
        self._queued_ufrags.append(offer.ice_ufrag)
        self._queue.put_nowait(("offer", lambda: self._negotiate(offer)))

    async def add_candidate(self, candidate: RTCIceCandidate | None) -> None:
        """Apply a trickled candidate now if it belongs to the current session.

        Otherwise it waits in the queue behind the offer that starts its session.
        """
        if self.pc is None and not self._queued_ufrags:
            raise ProtocolError("no_pending_offer", "send an offer before ICE candidates")
        current = all(ufrag == self._remote_ufrag for ufrag in self._queued_ufrags)
        if self.pc is not None and self.pc.remoteDescription is not None and current:
            await self._add_candidate(candidate)
        else:
            self._queue.put_nowait(("ice", lambda: self._add_candidate(candidate)))

    async def _run_queue(self) -> None:
        while True:
            event, work = await self._queue.get()
            try:
                await work()
            except ProtocolError as error:
                await self.room.signal.error(self.participant, event, error)
            except Exception:
                logger.exception("%s failed for peer %s", event, self.peer_id)
                await self.room.signal.error(
                    self.participant,
                    event,
                    ProtocolError("internal_error", f"the server could not handle this {event}"),
                )

    # -- negotiation ---------------------------------------------------------------

    async def _negotiate(self, offer: ParsedOffer) -> None:
        try:
            await self._apply_offer(offer)
        finally:
            self._queued_ufrags.remove(offer.ice_ufrag)
        await self.room.flush()

    async def _apply_offer(self, offer: ParsedOffer) -> None:
        if self.pc is not None and offer.ice_ufrag != self._remote_ufrag:
            await self.close_connection("replaced by a new peer connection", notify=False)
        fresh = self.pc is None
        if fresh:
            self._open_connection()
        else:
            await self._wait_connected()
        assert self.pc is not None
        self.negotiating = True
        try:
            try:
                await self.pc.setRemoteDescription(offer.description)
            except Exception as exc:
                if fresh:
                    await self.close_connection("offer rejected", notify=False)
                raise ProtocolError(
                    "invalid_sdp", f"the offer could not be applied: {exc}"
                ) from None
            self._remote_ufrag = offer.ice_ufrag
            await self._sync_transceivers(offer)
            self.room.reallocate()
            self._steer_new_slots()
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            self._announced = {slot: stream_of(slot) for slot in self.slots}
            for slot in self.slots:
                slot.codec = slot.codec or slot.track.codec_mime
            await self.room.signal.send(
                self.participant,
                "answer",
                {"type": "answer", "sdp": self.pc.localDescription.sdp},
            )
        finally:
            self.negotiating = False

    async def _wait_connected(self) -> None:
        """Renegotiating before DTLS is up leaves new senders unstarted: wait for it."""
        try:
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout)
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
        self._connected.clear()
        pc = self.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            if pc.connectionState == "connected":
                self._connected.set()
            elif pc.connectionState in ("failed", "closed"):
                await self.close_connection(f"connection {pc.connectionState}")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if pc is self.pc:
                self.room.datachannels.attach(self.participant, channel)

        self._watchdog = asyncio.create_task(self._watch_connect(pc))

    async def _watch_connect(self, pc: RTCPeerConnection) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout)
        except TimeoutError:
            if pc is self.pc:
                await self.close_connection("media_timeout")

    async def _sync_transceivers(self, offer: ParsedOffer) -> None:
        """Publications for what the client sends, slots for what it wants to receive.

        Codecs are steered first: VP8 (then H.264) so that publishers and
        subscribers share one codec and frames can be forwarded untouched; a
        slot keeps the codec of its first answer, since its sender cannot change.
        """
        assert self.pc is not None
        for transceiver in self.pc.getTransceivers():
            section = offer.section(transceiver.mid)
            if section is None:
                continue
            slot = self._slot_of(transceiver)
            locked = [slot.codec] if slot is not None and slot.codec else []
            prefer_codecs(transceiver, [*locked, *CODEC_PREFERENCE[transceiver.kind]])
            await self._sync_publication(transceiver, section)
            self._sync_slot(transceiver, section)
            transceiver.direction = server_direction(section)

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
            if source.mime_type != slot.track.codec_mime and source.mime_type in supported:
                prefer_codecs(slot.transceiver, [source.mime_type, *CODEC_PREFERENCE[slot.kind]])
                slot.track.attach(source, again=True)

    async def _sync_publication(
        self, transceiver: RTCRtpTransceiver, section: MediaSection
    ) -> None:
        mid = section.mid
        publication = self.publications.get(mid)
        if section.client_sends and publication is None and transceiver.receiver.track:
            publication = Publication(
                self.peer_id,
                transceiver,
                self.room.relay,
                forward=self._forwarding,
                source=section.source,
            )
            if publication.kind == "audio":
                peer_id = self.peer_id
                observe_audio_levels(
                    transceiver.receiver, lambda level: self.room.speaker.level(peer_id, level)
                )
            await publication.start()
            self.publications[mid] = publication
            self.room.audio.attach(publication, self.room.name, lambda: self.participant.nickname)
        elif not section.client_sends and publication is not None:
            del self.publications[mid]
            self.room.audio.detach(publication)
            await publication.close()

    def _sync_slot(self, transceiver: RTCRtpTransceiver, section: MediaSection) -> None:
        slot = self._slot_of(transceiver)
        if section.client_receives and slot is None:
            track = SlotTrack(transceiver, forwarding=self._forwarding)
            transceiver.sender.replaceTrack(track)
            self.slots.append(Slot(transceiver, track))
        elif not section.client_receives and slot is not None:
            self.slots.remove(slot)
            slot.track.close()

    # -- allocation ------------------------------------------------------------------

    def reallocate(self, sources: list[Publication], speaker_order: list[str]) -> None:
        """Match the room's other publications to this peer's slots (no I/O)."""
        if self.participant.dialect is Dialect.NATIVE:
            plan, self._missing = plan_every_source(self.slots, sources)
        else:
            plan, self._missing = plan_follow_speaker(self.slots, sources, speaker_order), Counter()
        for slot in apply_plan(plan):
            if slot.source is not None:
                set_stream_id(slot.transceiver, slot.source.peer_id)

    def _slots_wanted(self) -> dict[str, int] | None:
        """Receive slots per kind the client should have, or None when nothing is missing."""
        stale = any(
            slot.source is not None and stream_of(slot) != self._announced.get(slot)
            for slot in self.slots
        )
        if not self._missing and not stale:
            return None
        have = Counter(slot.kind for slot in self.slots)
        return {kind: have[kind] + self._missing[kind] for kind in ("audio", "video")}

    async def flush_notices(self) -> None:
        """Tell a native client about slot changes: ``tracks``, then ``renegotiate``."""
        if (
            self.negotiating
            or self.closed
            or self.pc is None  # being closed: media_closed is coming, not slot changes
            or self.participant.dialect is not Dialect.NATIVE
        ):
            return
        tracks = self.describe_tracks()
        if tracks != self._tracks_sent:
            self._tracks_sent = tracks
            await self.room.signal.send(self.participant, "tracks", tracks)
        wanted = self._slots_wanted()
        if wanted is not None:
            await self.room.signal.send(self.participant, "renegotiate", wanted)

    def describe_tracks(self) -> dict[str, Any]:
        return {
            "tracks": [
                {
                    "mid": slot.mid,
                    "kind": slot.kind,
                    "peer_id": slot.source.peer_id if slot.source else None,
                    "source": slot.source.source if slot.source else None,
                }
                for slot in self.slots
            ]
        }

    # -- teardown -----------------------------------------------------------------------

    async def close_connection(self, reason: str, *, notify: bool = True) -> None:
        """Close the RTCPeerConnection and free everything it carried; the peer may offer again."""
        pc, self.pc = self.pc, None
        if pc is None:
            return
        logger.info("closing media of %s: %s", self.peer_id, reason)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        self._watchdog = None
        self._remote_ufrag = None
        publications, self.publications = list(self.publications.values()), {}
        slots, self.slots = self.slots, []
        for publication in publications:
            self.room.audio.detach(publication)
            await publication.close()
        for slot in slots:
            slot.track.close()
        self._announced = {}
        self._tracks_sent = None
        self.room.datachannels.detach(self.peer_id)
        await pc.close()
        if not self.closed:
            await self.room.refresh()
            if notify and self.participant.dialect is Dialect.NATIVE:
                await self.room.signal.send(self.participant, "media_closed", {"reason": reason})

    async def close(self, reason: str) -> None:
        """The participant left: stop the work queue and release all media."""
        if self.closed:
            return
        self.closed = True
        if self._worker is not asyncio.current_task():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.close_connection(reason, notify=False)

    def stats(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "connection": self.pc.connectionState if self.pc else None,
            "published": sorted(p.kind for p in self.publications.values()),
            "publications": {mid: p.stats() for mid, p in self.publications.items()},
            "slots": len(self.slots),
            "receiving": sum(1 for slot in self.slots if slot.source is not None),
            "receiving_from": [stream_of(slot) for slot in self.slots],
            "slot_details": {
                slot.mid: {"from": stream_of(slot), **slot.track.stats()} for slot in self.slots
            },
        }


def stream_of(slot: Slot) -> str | None:
    return slot.source.peer_id if slot.source else None

"""The SFU's interface, served by media worker processes: rooms placed, commands routed.

:class:`RemoteSfu` stands where a :class:`~server.media.sfu.Sfu` would in the
relay backend. It places each room on the least-loaded live worker (load: the
participants of its rooms, each of whom brings publications and subscriptions),
sends every command for the room there, and turns the worker's events back into
:class:`MediaListener` calls. When a worker dies, its rooms move to live
workers: their participants are registered again there (with their mutes) and
told their media closed, so that their clients connect again by themselves.
Live audio listeners (``WS /ws/audio``) of a room get its PCM from its worker,
and keep getting it after a move.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..audio.feed import DropOldestFeed
from ..audio.live import MAX_QUEUED, Sink
from ..media.latency import LatencyHistogram
from ..media.offer import ParsedOffer, parse_offer
from ..media.publication import PublicationObserver
from ..media.types import KINDS, CloseReason, Kind, MediaConfig, MediaListener, RateGate, SlotPolicy
from ..validation import IceCandidate, ProtocolError
from . import wire
from .pool import EventHandler, WorkerPool, WorkerProcess
from .publications import PublicationMirror

logger = logging.getLogger(__name__)


@dataclass
class Member:
    """What a worker must be told again about a participant when its room moves."""

    policy: SlotPolicy
    nickname: str
    may_send_data: bool = True
    muted: set[Kind] = field(default_factory=set)


class WorkerAudioStream:
    """One live audio listener of a room on a worker: the PCM its worker streams up.

    Chunks wait in a short queue (the oldest dropped beyond a second) for a task that
    hands them to the listener, so that a slow listener never holds up the worker's
    other events.
    """

    def __init__(
        self,
        room: str,
        peer_id: str | None,
        stream: int,
        sink: Sink,
        on_close: Callable[[WorkerAudioStream], Awaitable[None]],
    ) -> None:
        self.room = room
        self.peer_id = peer_id
        self.id = stream
        self._feed = DropOldestFeed(sink, MAX_QUEUED)
        self.offer = self._feed.offer
        self._on_close = on_close

    @property
    def dropped(self) -> int:
        return self._feed.dropped

    async def end(self) -> None:
        """Deliver nothing more (the server is closing: its workers stop anyway)."""
        await self._feed.stop()

    async def close(self) -> None:
        """Stop listening: the worker stops streaming."""
        await self.end()
        await self._on_close(self)


class RemoteSfu:
    """Every room's media, each room on one worker process."""

    def __init__(
        self,
        config: MediaConfig,
        listener: MediaListener,
        workers: int,
        worker_config_json: str,
        nickname_of: Callable[[str], str],
        on_audio_event: EventHandler,
        observers: list[PublicationObserver],
    ) -> None:
        self.config = config
        self._listener = listener
        self._publications = PublicationMirror(observers)
        self._nickname_of = nickname_of
        self._on_audio_event = on_audio_event
        self.pool = WorkerPool(workers, worker_config_json, self._on_event, self._moved_off)
        self._placement: dict[str, WorkerProcess] = {}
        self._members: dict[str, dict[str, Member]] = {}
        self._speakers: dict[str, str | None] = {}
        self._streams: dict[int, WorkerAudioStream] = {}
        self._stream_ids = itertools.count(1)
        self.moved_rooms = 0

    async def start(self) -> None:
        await self.pool.start()

    # -- placement ------------------------------------------------------------------------

    def load(self, worker: WorkerProcess) -> int:
        return sum(
            len(self._members.get(room, ()))
            for room, owner in self._placement.items()
            if owner is worker
        )

    def _least_loaded(self, candidates: list[WorkerProcess]) -> WorkerProcess:
        return min(candidates, key=lambda worker: (self.load(worker), worker.slot))

    def _worker_of(self, room: str) -> WorkerProcess:
        worker = self._placement.get(room)
        if worker is None:
            raise ProtocolError("not_in_room", "join a room first")
        return worker

    def worker_of(self, room: str) -> WorkerProcess | None:
        return self._placement.get(room)

    def _place(self, room: str) -> WorkerProcess:
        """The room's worker, placing the room on the least loaded live one if it is new."""
        worker = self._placement.get(room)
        if worker is None:
            live = self.pool.live()
            if not live:
                raise ProtocolError("media_unavailable", "media workers are restarting; retry")
            worker = self._placement[room] = self._least_loaded(live)
        return worker

    def _unplace_if_unused(self, room: str) -> None:
        """A room nobody is in and nobody listens to no longer has a worker."""
        if not self._members.get(room) and not self._streams_of(room):
            self._members.pop(room, None)
            self._placement.pop(room, None)
            self._speakers.pop(room, None)

    def _streams_of(self, room: str) -> list[WorkerAudioStream]:
        return [stream for stream in self._streams.values() if stream.room == room]

    # -- the Sfu's interface ----------------------------------------------------------------

    def join(
        self,
        room: str,
        peer_id: str,
        policy: SlotPolicy,
        rate_gate: RateGate,
        *,
        may_send_data: bool = True,
    ) -> None:
        """Register a participant on its room's worker (placing the room if it is new).

        The worker keeps its own rate limit for the participant's data channel messages.
        """
        worker = self._place(room)
        member = Member(policy, self._nickname_of(peer_id), may_send_data)
        self._members.setdefault(room, {})[peer_id] = member
        if worker.alive:  # else the room is about to move, and its members with it
            self._send_join(worker, room, peer_id, member)

    @staticmethod
    def _send_join(worker: WorkerProcess, room: str, peer_id: str, member: Member) -> None:
        worker.send(
            "join",
            room=room,
            peer_id=peer_id,
            policy=member.policy.value,
            nickname=member.nickname,
            may_send_data=member.may_send_data,
        )

    async def leave(self, room: str, peer_id: str) -> None:
        members = self._members.get(room, {})
        if members.pop(peer_id, None) is None:
            return
        worker = self._placement.get(room)
        self._unplace_if_unused(room)
        if worker is not None and worker.alive:
            # If the worker dies meanwhile, nothing of the participant is left there.
            with contextlib.suppress(ProtocolError):
                await worker.request("leave", room=room, peer_id=peer_id)

    async def resume(self, room: str, peer_id: str) -> None:
        """The participant is back on a new connection: its worker tells it everything again."""
        if peer_id in self._members.get(room, {}):
            await self._worker_of(room).request("resume", room=room, peer_id=peer_id)

    def parse_offer(self, sdp: str, sources: dict[str, str] | None = None) -> ParsedOffer:
        """Validated here, so that a bad offer is refused before any worker sees it."""
        return parse_offer(sdp, self.config.max_media_sections, sources)

    def offer(self, room: str, peer_id: str, offer: ParsedOffer) -> None:
        sources = {s.mid: s.source for s in offer.sections if s.source}
        self._worker_of(room).send(
            "offer", room=room, peer_id=peer_id, sdp=offer.description.sdp, sources=sources
        )

    async def ice(self, room: str, peer_id: str, candidate: IceCandidate | None) -> None:
        await self._worker_of(room).request(
            "ice",
            room=room,
            peer_id=peer_id,
            candidate=candidate.as_dict() if candidate else None,
        )

    async def set_muted(self, room: str, peer_id: str, kind: Kind, muted: bool) -> None:
        member = self._members.get(room, {}).get(peer_id)
        if member is None:
            raise ProtocolError("not_in_room", "no such participant in this room")
        await self._worker_of(room).request(
            "set_muted", room=room, peer_id=peer_id, kind=kind, muted=muted
        )
        if muted:
            member.muted.add(kind)
        else:
            member.muted.discard(kind)

    # -- live audio ---------------------------------------------------------------------

    async def listen(self, room: str, peer_id: str | None, sink: Sink) -> WorkerAudioStream:
        """Stream ``room``'s live audio (or ``peer_id``'s) to ``sink`` from the room's worker
        (placing the room if nobody is in it yet, as a join would)."""
        worker = self._place(room)
        stream = WorkerAudioStream(room, peer_id, next(self._stream_ids), sink, self._unlisten)
        self._streams[stream.id] = stream
        try:
            await worker.request("listen", room=room, stream=stream.id, peer_id=peer_id)
        except ProtocolError:
            await stream.close()
            raise
        return stream

    async def _unlisten(self, stream: WorkerAudioStream) -> None:
        if self._streams.pop(stream.id, None) is None:
            return
        worker = self._placement.get(stream.room)
        self._unplace_if_unused(stream.room)
        if worker is not None and worker.alive:
            with contextlib.suppress(ProtocolError, wire.WireClosed):
                await worker.request("unlisten", room=stream.room, stream=stream.id)

    # -- what signaling asks (from the workers' latest reports) --------------------------

    def _room_report(self, room: str) -> dict[str, Any]:
        worker = self._placement.get(room)
        if worker is None:
            return {}
        report: dict[str, Any] = worker.snapshot.get("rooms", {}).get(room, {})
        return report

    def published(self, room: str) -> dict[Kind, int]:
        published = self._room_report(room).get("published") or {}
        return {kind: int(published.get(kind, 0)) for kind in KINDS}

    def active_speaker(self, room: str) -> str | None:
        return self._speakers.get(room)

    def is_recording(self, room: str) -> bool:
        return bool(self._room_report(room).get("recording"))

    def room_stats(self, room: str) -> dict[str, Any]:
        stats = dict(self._room_report(room).get("stats") or {"peers": []})
        worker = self._placement.get(room)
        if worker is not None:
            stats["worker"] = worker.slot
        return stats

    def stats(self) -> dict[str, Any]:
        totals = dict.fromkeys(
            ("rooms", "peer_connections", "publications", "slots", "subscriptions"), 0
        )
        workers = []
        for worker in self.pool.workers:
            reported = worker.snapshot.get("stats", {})
            for key in totals:
                totals[key] += int(reported.get(key, 0))
            workers.append(
                {
                    "slot": worker.slot,
                    "pid": worker.pid,
                    "alive": worker.alive,
                    "rooms": sorted(r for r, w in self._placement.items() if w is worker),
                    "participants": self.load(worker),
                    "subscriptions": int(reported.get("subscriptions", 0)),
                }
            )
        return {
            "forwarding": "forward" if self.config.forwarding else "transcode",
            **totals,
            "workers": workers,
            "worker_restarts": self.pool.restarts,
            "moved_rooms": self.moved_rooms,
        }

    def audio_reports(self) -> list[dict[str, Any]]:
        return [worker.snapshot.get("audio", {}) for worker in self.pool.workers]

    @property
    def forward_latency(self) -> LatencyHistogram:
        """Every worker's histogram, added up."""
        merged = LatencyHistogram()
        for worker in self.pool.workers:
            latency = worker.snapshot.get("latency")
            if not latency or len(latency["counts"]) != len(merged.counts):
                continue
            merged.counts = [a + b for a, b in zip(merged.counts, latency["counts"], strict=True)]
            merged.total += int(latency["total"])
            merged.sum += float(latency["sum"])
        return merged

    async def close(self) -> None:
        for stream in list(self._streams.values()):
            await stream.end()
        self._streams.clear()
        await self.pool.close()
        self._placement.clear()
        self._members.clear()

    # -- worker -> listener ---------------------------------------------------------------

    async def _on_event(self, worker: WorkerProcess, message: wire.Message) -> None:
        event = message["event"]
        listener = self._listener
        if self._publications.handle(worker.pid or 0, message) or self._relay_pcm(worker, message):
            return
        if event == "snapshot":
            self._publications.refresh(worker.pid or 0, message.get("publications", {}))
        elif event == "answer":
            await listener.answer(message["peer_id"], message["sdp"])
        elif event == "slots_changed":
            await listener.slots_changed(message["peer_id"], wire.slots_from_wire(message["slots"]))
        elif event == "renegotiation_needed":
            await listener.renegotiation_needed(message["peer_id"], message["wanted"])
        elif event == "media_closed":
            await listener.media_closed(message["peer_id"], CloseReason(message["reason"]))
        elif event == "speaker_changed":
            if self._placement.get(message["room"]) is worker:
                self._speakers[message["room"]] = message["peer_id"]
                await listener.speaker_changed(message["room"], message["peer_id"])
        elif event == "uplink_quality":
            if self._placement.get(message["room"]) is worker:
                reports = wire.uplinks_from_wire(message["reports"])
                await listener.uplink_quality(message["room"], reports)
        elif event == "error":
            await listener.error(
                message["peer_id"], message["on"], wire.error_from_wire(message["error"])
            )
        else:
            await self._on_audio_event(worker, message)

    def _relay_pcm(self, worker: WorkerProcess, message: wire.Message) -> bool:
        """A live audio chunk for one of our listeners (True: the message was one)."""
        if message["event"] != "pcm":
            return False
        stream = self._streams.get(message["stream"])
        if stream is not None and self._placement.get(stream.room) is worker:
            stream.offer(base64.b64decode(message["pcm"]))
        return True

    # -- failure --------------------------------------------------------------------------

    async def _moved_off(self, lost: WorkerProcess) -> None:
        """Place the dead worker's rooms again and tell their participants to reconnect."""
        stranded = {
            room: list(self._members.get(room, {}))
            for room, worker in self._placement.items()
            if worker is lost
        }
        self._publications.worker_lost(lost.pid or 0)
        for room in stranded:
            del self._placement[room]
            self._speakers.pop(room, None)
        for room, before in stranded.items():
            live = await self.pool.wait_for_live()
            members = self._members.get(room, {})
            peer_ids = [peer_id for peer_id in before if peer_id in members]
            streams = self._streams_of(room)
            if not peer_ids and not streams:
                continue  # everyone left while we waited
            target = self._placement.get(room)  # a newcomer may have placed it meanwhile
            if target is None:
                target = self._placement[room] = self._least_loaded(live)
            self.moved_rooms += 1
            logger.warning(
                "room %r moved from media worker %d to %d (%d participants)",
                room,
                lost.slot,
                target.slot,
                len(peer_ids),
            )
            try:
                for peer_id in peer_ids:
                    member = members[peer_id]
                    self._send_join(target, room, peer_id, member)
                    for kind in member.muted:
                        target.send("set_muted", room=room, peer_id=peer_id, kind=kind, muted=True)
                for stream in streams:  # live listeners hear the room again from there
                    target.send("listen", room=room, stream=stream.id, peer_id=stream.peer_id)
            except (ProtocolError, wire.WireClosed):
                logger.warning("media worker %d died while taking room %r", target.slot, room)
            for peer_id in peer_ids:
                await self._listener.media_closed(peer_id, CloseReason.MOVED)

"""A media worker process: one :class:`Sfu` and the server-side audio for its rooms.

Started by the front (``python -m server.workers.process --fd N --config JSON``)
with one end of a socket pair. It runs the commands the front sends, per room
in order (rooms run side by side), and reports every :class:`MediaListener`
fact, audio consumer output, transcript and recording back as an event. It
exits when the front goes away (end of stream).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..audio.hub import AudioHub, LiveStream, build_consumers
from ..audio.live import LiveAudio
from ..audio.transcripts import TranscriptStore
from ..logs import configure_logging
from ..media.sdp_budget import configure_candidates
from ..media.sfu import Sfu
from ..media.types import CloseReason, Kind, MediaConfig, SlotInfo, SlotPolicy, UplinkQuality
from ..ratelimit import TokenBucket
from ..validation import ProtocolError, ice_candidate
from . import wire
from .publications import PublicationReporter

logger = logging.getLogger(__name__)

SNAPSHOT_INTERVAL = 1.0  # seconds between the state reports the front's /stats reads


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs from the server's settings (sent as JSON at start)."""

    media: dict[str, Any]  # MediaConfig's fields
    allow_loopback_candidates: bool
    rate_limit: float
    rate_burst: int
    record_dir: str | None
    stt: bool
    audio_consumers: list[str]
    record_rooms: list[str]
    stt_rooms: list[str]
    stt_partials: bool
    tap_buffer_seconds: float
    log_level: str
    log_format: str

    def media_config(self) -> MediaConfig:
        media = dict(self.media)
        media["ice_servers"] = tuple(media.get("ice_servers", ()))
        return MediaConfig(**media)


class WorkerListener:
    """The SFU's facts and the audio consumers' output, sent up the wire as events."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def event(self, name: str, /, **data: Any) -> None:
        with contextlib.suppress(wire.WireClosed):  # the front is gone; we are exiting
            wire.send(self._writer, {"event": name, **data})

    # MediaListener
    async def answer(self, peer_id: str, sdp: str) -> None:
        self.event("answer", peer_id=peer_id, sdp=sdp)

    async def slots_changed(self, peer_id: str, slots: list[SlotInfo]) -> None:
        self.event("slots_changed", peer_id=peer_id, slots=wire.slots_to_wire(slots))

    async def renegotiation_needed(self, peer_id: str, wanted: dict[Kind, int]) -> None:
        self.event("renegotiation_needed", peer_id=peer_id, wanted=wanted)

    async def media_closed(self, peer_id: str, reason: CloseReason) -> None:
        self.event("media_closed", peer_id=peer_id, reason=reason.value)

    async def speaker_changed(self, room: str, peer_id: str | None) -> None:
        self.event("speaker_changed", room=room, peer_id=peer_id)

    async def uplink_quality(self, room: str, reports: list[UplinkQuality]) -> None:
        self.event("uplink_quality", room=room, reports=wire.uplinks_to_wire(reports))

    async def error(self, peer_id: str, event: str, error: ProtocolError) -> None:
        self.event("error", peer_id=peer_id, on=event, error=wire.error_to_wire(error))

    # RoomOutput (audio consumers' results)
    async def emit(self, room: str, event: str, data: dict[str, Any]) -> None:
        self.event("emit", room=room, name=event, data=data)

    def recording_finished(self, room: str, peer_id: str, path: str, seconds: float) -> None:
        self.event("recording_finished", room=room, peer_id=peer_id, path=path, seconds=seconds)


class ForwardedTranscripts(TranscriptStore):
    """The captions' transcript store, kept by the front: each entry goes up the wire."""

    def __init__(self, listener: WorkerListener) -> None:
        super().__init__()
        self._listener = listener

    def add(self, room: str, entry: Any) -> None:
        self._listener.event("transcript", room=room, entry=dict(entry))


class RoomLanes:
    """Runs each room's commands in arrival order; different rooms do not wait for each other."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Task[None]] = {}

    def run(self, room: str, step: Callable[[], Awaitable[None]]) -> None:
        before = self._last.get(room)

        async def in_turn() -> None:
            if before is not None:
                await asyncio.wait([before])
            await step()

        task = asyncio.create_task(in_turn())
        self._last[room] = task
        task.add_done_callback(lambda done: self._forget(room, done))

    def _forget(self, room: str, task: asyncio.Task[None]) -> None:
        if self._last.get(room) is task:
            del self._last[room]
        if not task.cancelled() and task.exception() is not None:
            logger.error("a command failed", exc_info=task.exception())

    async def drain(self) -> None:
        if self._last:
            await asyncio.wait(list(self._last.values()))


class MediaWorker:
    """Executes the front's commands on this process's SFU."""

    def __init__(self, config: WorkerConfig, writer: asyncio.StreamWriter) -> None:
        self._config = config
        self._writer = writer
        self.listener = WorkerListener(writer)
        self._nicknames: dict[str, str] = {}
        record_dir = Path(config.record_dir) if config.record_dir else None
        self._streams: dict[int, LiveStream] = {}  # WS /ws/audio listeners of the front
        consumers = build_consumers(
            record_dir,
            config.stt,
            config.audio_consumers,
            ForwardedTranscripts(self.listener),
            record_rooms=config.record_rooms,
            stt_rooms=config.stt_rooms,
            stt_partials=config.stt_partials,
            recording_finished=self.listener.recording_finished,
        )
        self.audio = AudioHub(
            [*consumers, LiveAudio()],
            self.listener,
            TranscriptStore(),
            config.tap_buffer_seconds,
            lambda peer_id: self._nicknames.get(peer_id, "Anon"),
        )
        configure_candidates(allow_loopback=config.allow_loopback_candidates)
        self.publications = PublicationReporter(self.listener.event)
        self.sfu = Sfu(
            config.media_config(),
            listener=self.listener,
            observers=[self.audio, self.publications],
        )
        self._lanes = RoomLanes()

    def handle(self, message: wire.Message) -> None:
        """Schedule one command in its room's lane; its reply is sent when it is done."""
        op = message.get("op")
        room = str(message.get("room", ""))
        request_id = message.get("id")

        async def step() -> None:
            try:
                await self._execute(op, room, message)
            except ProtocolError as error:
                if request_id is None:
                    self.listener.event(
                        "error",
                        peer_id=message.get("peer_id"),
                        on=op,
                        error=wire.error_to_wire(error),
                    )
                else:
                    self._reply(request_id, error=wire.error_to_wire(error))
                return
            if request_id is not None:
                self._reply(request_id)

        self._lanes.run(room, step)

    def _reply(self, request_id: int, error: wire.Message | None = None) -> None:
        reply: wire.Message = {"reply": request_id}
        if error is not None:
            reply["error"] = error
        with contextlib.suppress(wire.WireClosed):
            wire.send(self._writer, reply)

    async def _execute(self, op: Any, room: str, message: wire.Message) -> None:
        peer_id = str(message.get("peer_id", ""))
        if op == "join":
            self._nicknames[peer_id] = str(message.get("nickname", "Anon"))
            bucket = TokenBucket(self._config.rate_limit, self._config.rate_burst)
            self.sfu.join(
                room,
                peer_id,
                SlotPolicy(message["policy"]),
                bucket.try_take,
                may_send_data=bool(message.get("may_send_data", True)),
            )
        elif op == "leave":
            self._nicknames.pop(peer_id, None)
            await self.sfu.leave(room, peer_id)
        elif op == "offer":
            parsed = self.sfu.parse_offer(message["sdp"], message.get("sources"))
            self.sfu.offer(room, peer_id, parsed)
        elif op == "resume":
            await self.sfu.resume(room, peer_id)
        elif op == "ice":
            await self.sfu.ice(room, peer_id, ice_candidate(message.get("candidate")))
        elif op == "set_muted":
            await self.sfu.set_muted(room, peer_id, message["kind"], bool(message["muted"]))
        elif op == "listen":
            await self._listen(room, int(message["stream"]), message.get("peer_id"))
        elif op == "unlisten":
            listening = self._streams.pop(int(message["stream"]), None)
            if listening is not None:
                await listening.close()
        else:
            raise ProtocolError("bad_request", f"unknown worker command {op!r}")

    async def _listen(self, room: str, stream: int, peer_id: str | None) -> None:
        """Stream a room's mix (or one participant) up to the front, for a ``WS /ws/audio``
        client there: base64 in the wire's JSON, 20 ms chunks, ~43 KB/s."""

        async def up(pcm: bytes) -> None:
            self.listener.event("pcm", stream=stream, pcm=base64.b64encode(pcm).decode())

        if stream not in self._streams:
            self._streams[stream] = await self.audio.listen(room, peer_id, up)

    def snapshot(self) -> wire.Message:
        """The state the front shows in /rooms and /stats, and uses to place rooms."""
        rooms = {
            name: {
                "published": self.sfu.published(name),
                "speaker": self.sfu.active_speaker(name),
                "stats": self.sfu.room_stats(name),
                "recording": self.audio.is_recording(name),
            }
            for name in self.sfu.room_names()
        }
        return {
            "event": "snapshot",
            "pid": os.getpid(),
            "rooms": rooms,
            "stats": self.sfu.stats(),
            "audio": self.audio.stats(),
            "publications": self.publications.report(),
            "latency": {
                "counts": self.sfu.forward_latency.counts,
                "total": self.sfu.forward_latency.total,
                "sum": self.sfu.forward_latency.sum,
            },
        }

    async def report(self) -> None:
        while True:
            try:
                wire.send(self._writer, self.snapshot())
            except wire.WireClosed:
                return
            await asyncio.sleep(SNAPSHOT_INTERVAL)

    async def close(self) -> None:
        await self._lanes.drain()
        await self.sfu.close()
        await self.audio.close()


async def serve(sock: socket.socket, config: WorkerConfig) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    worker = MediaWorker(config, writer)
    await worker.audio.start()
    wire.send(writer, {"event": "ready", "pid": os.getpid()})
    reporter = asyncio.create_task(worker.report())
    try:
        while True:
            message = await wire.receive(reader)
            if message.get("op") == "shutdown":
                break
            worker.handle(message)
    except wire.WireClosed:
        logger.info("media worker %d: the front went away", os.getpid())
    finally:
        reporter.cancel()
        await worker.close()
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="roomrelay media worker (started by the server)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = WorkerConfig(**orjson.loads(args.config))
    configure_logging(config.log_level, config.log_format)
    sock = socket.socket(fileno=args.fd)
    asyncio.run(serve(sock, config))


if __name__ == "__main__":
    main()

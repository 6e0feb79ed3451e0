"""Relay mode on media workers: the front's side of the wiring, from the settings."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

import orjson
import socketio
from aiohttp import web

from ..audio.consumer import RoomPatterns
from ..audio.hub import AudioHub
from ..audio.live import Sink
from ..audio.transcripts import TranscriptStore
from ..backends.relay import MediaFactory, RelayBackend, SocketRoomOutput
from ..events import EventRouter
from ..media.publication import PublicationObserver
from ..media.types import MediaConfig, MediaListener
from ..rooms import DEFAULT_NICKNAME, Roster
from ..settings import Settings
from ..validation import ProtocolError
from ..webhooks import Webhooks
from . import wire
from .pool import WorkerProcess
from .process import WorkerConfig
from .remote import RemoteSfu, WorkerAudioStream

logger = logging.getLogger(__name__)


def worker_count(settings: Settings) -> int:
    """How many media workers the settings ask for (0: one per core); 1 means none."""
    if settings.media != "relay":
        return 1
    return settings.workers or os.cpu_count() or 1


def worker_config(settings: Settings, media: MediaConfig) -> WorkerConfig:
    return WorkerConfig(
        media={**dataclasses.asdict(media), "ice_servers": list(media.ice_servers)},
        allow_loopback_candidates=settings.allow_loopback_candidates,
        rate_limit=settings.rate_limit,
        rate_burst=settings.rate_burst,
        record_dir=str(settings.record_dir) if settings.record_dir else None,
        stt=settings.stt,
        audio_consumers=list(settings.audio_consumers),
        record_rooms=list(settings.record_rooms),
        stt_rooms=list(settings.stt_rooms),
        stt_partials=settings.stt_partials,
        tap_buffer_seconds=settings.tap_buffer_seconds,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )


class WorkerAudio(AudioHub):
    """The front's audio hub when the consumers run on the workers: it keeps the
    transcripts they send and answers from their reports."""

    def __init__(self, settings: Settings, transcripts: TranscriptStore) -> None:
        super().__init__([], _NoOutput(), transcripts, settings.tap_buffer_seconds, str)
        self._captions = RoomPatterns(settings.stt_rooms) if settings.stt else None
        self._consumer_names = [
            *(["recorder"] if settings.record_dir else []),
            *(["captions"] if settings.stt else []),
            *settings.audio_consumers,
            "live",  # WS /ws/audio listeners, on each worker
        ]
        self.media: RemoteSfu | None = None

    def has_captions(self, room: str) -> bool:
        return self._captions is not None and room in self._captions

    async def listen(self, room: str, peer_id: str | None, sink: Sink) -> WorkerAudioStream:
        """Live audio for ``WS /ws/audio``, streamed from the room's worker."""
        if self.media is None:
            raise ProtocolError("media_unavailable", "media workers are not started yet")
        return await self.media.listen(room, peer_id, sink)

    def is_recording(self, room: str) -> bool:
        return self.media is not None and self.media.is_recording(room)

    def stats(self) -> dict[str, Any]:
        reports = self.media.audio_reports() if self.media else []
        dropped: dict[str, int] = {}
        delivered: dict[str, int] = {}
        for report in reports:
            for name, count in report.get("dropped_chunks", {}).items():
                dropped[name] = dropped.get(name, 0) + count
            for name, count in report.get("delivered_chunks", {}).items():
                delivered[name] = delivered.get(name, 0) + count
        consumers = next((r["consumers"] for r in reports if r.get("consumers")), None)
        return {
            "consumers": consumers if consumers is not None else self._consumer_names,
            "captions": [c for report in reports for c in report.get("captions", [])],
            "taps": sum(int(report.get("taps", 0)) for report in reports),
            "delivered_chunks": delivered,
            "dropped_chunks": dropped,
        }


class _NoOutput:
    async def emit(self, room: str, event: str, data: dict[str, Any]) -> None:
        return None


class AudioEvents:
    """What the workers' audio consumers produce, delivered from the front."""

    def __init__(
        self, sio: socketio.AsyncServer, transcripts: TranscriptStore, webhooks: Webhooks | None
    ) -> None:
        self._output = SocketRoomOutput(sio)
        self._transcripts = transcripts
        self._webhooks = webhooks

    async def __call__(self, worker: WorkerProcess, message: wire.Message) -> None:
        event = message["event"]
        if event == "emit":
            await self._output.emit(message["room"], message["name"], message["data"])
        elif event == "transcript":
            self._transcripts.add(message["room"], message["entry"])
        elif event == "recording_finished" and self._webhooks is not None:
            self._webhooks.recording_finished(
                message["room"], message["peer_id"], message["path"], message["seconds"]
            )


def create_worker_relay(
    app: web.Application,
    settings: Settings,
    sio: socketio.AsyncServer,
    roster: Roster,
    router: EventRouter,
    media: MediaConfig,
    webhooks: Webhooks | None,
    observers: list[PublicationObserver],
    wrap: Callable[[MediaFactory], MediaFactory] | None = None,
) -> tuple[RelayBackend, WorkerAudio]:
    """The relay backend with its rooms on ``worker_count(settings)`` worker processes."""
    transcripts = TranscriptStore()
    audio = WorkerAudio(settings, transcripts)
    config_json = orjson.dumps(dataclasses.asdict(worker_config(settings, media))).decode()

    def nickname_of(peer_id: str) -> str:
        participant = roster.by_peer_id(peer_id)
        return participant.nickname if participant else DEFAULT_NICKNAME

    def remote_sfu(listener: MediaListener) -> RemoteSfu:
        remote = RemoteSfu(
            media,
            listener,
            worker_count(settings),
            config_json,
            nickname_of,
            AudioEvents(sio, transcripts, webhooks),
            observers,
        )
        audio.media = remote
        return remote

    factory: MediaFactory = remote_sfu
    backend = RelayBackend(
        sio, roster, router, media, audio, media=wrap(factory) if wrap else factory
    )

    async def start_workers(app: web.Application) -> None:
        assert audio.media is not None
        await audio.media.start()
        logger.info("relay media on %d worker processes", worker_count(settings))

    app.on_startup.append(start_workers)
    return backend, audio

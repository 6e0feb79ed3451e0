"""The server's audio consumers and the taps that feed them, created from the settings."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..validation import ProtocolError
from .consumer import AudioConsumer, RoomOutput, RoomPatterns
from .live import Listener, LiveAudio, Sink
from .recorder import RecordingFinished, WavRecorder
from .stt import PARTIAL_EVERY, SpeechRecognizer
from .tap import FINISH_TIMEOUT, AudioTap
from .transcripts import TranscriptStore

if TYPE_CHECKING:
    from ..media.publication import Publication

logger = logging.getLogger(__name__)


def load_consumer(path: str) -> AudioConsumer:
    """Instantiate ``package.module:Class`` (no arguments), a consumer of your own."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:Class', got {path!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory()


def build_consumers(
    record_dir: Path | None,
    stt: bool,
    extra: Sequence[str],
    transcripts: TranscriptStore,
    *,
    record_rooms: Sequence[str] = ("*",),
    stt_rooms: Sequence[str] = ("*",),
    stt_partials: bool = False,
    recording_finished: RecordingFinished | None = None,
) -> list[AudioConsumer]:
    consumers: list[AudioConsumer] = []
    if record_dir is not None:
        consumers.append(
            WavRecorder(
                record_dir, rooms=RoomPatterns(record_rooms), on_finished=recording_finished
            )
        )
    if stt:
        consumers.append(
            SpeechRecognizer(
                store=transcripts,
                rooms=RoomPatterns(stt_rooms),
                partial_every=PARTIAL_EVERY if stt_partials else None,
            )
        )
    consumers.extend(load_consumer(path) for path in extra)
    return consumers


class LiveStream(Protocol):
    """A live audio listener (``WS /ws/audio``), wherever its room's audio is decoded: in
    this process, on a media worker, or on another node."""

    @property
    def room(self) -> str: ...

    @property
    def peer_id(self) -> str | None: ...  # None: the room's mix

    @property
    def dropped(self) -> int: ...  # chunks dropped for a slow reader

    async def close(self) -> None: ...


class LocalStream:
    """A live listener of audio decoded in this process."""

    def __init__(self, hub: AudioHub, listener: Listener) -> None:
        self._hub = hub
        self._listener = listener
        self.room = listener.room
        self.peer_id = listener.peer_id

    @property
    def dropped(self) -> int:
        return self._listener.dropped

    async def close(self) -> None:
        await self._hub._stop_listening(self._listener)


class AudioHub:
    """Starts the consumers, taps each audio publication for the consumers of its room.

    The media core tells it about every publication (it is a
    ``PublicationObserver``). A room that no consumer accepts is not tapped, so
    its forwarded audio is never decoded.
    """

    def __init__(
        self,
        consumers: list[AudioConsumer],
        output: RoomOutput,
        transcripts: TranscriptStore,
        buffer_seconds: float,
        nickname_of: Callable[[str], str],
    ) -> None:
        self.consumers = consumers
        self.transcripts = transcripts
        self._output = output
        self._nickname_of = nickname_of
        self._buffer_seconds = buffer_seconds
        self._taps: dict[Publication, AudioTap] = {}
        self._rooms: dict[Publication, str] = {}  # every audio publication, tapped or not
        self._closing: set[asyncio.Task[None]] = set()
        self._dropped_before: dict[str, int] = {}

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start(self._output)
            logger.info("audio consumer %s started", consumer.name)

    def publication_added(self, room: str, publication: Publication) -> None:
        """Tap an audio publication for the consumers that accept its room, if any."""
        if publication.kind != "audio" or publication in self._taps:
            return
        self._rooms[publication] = room
        consumers = self.consumers_for(room)
        if consumers:
            peer_id = publication.peer_id
            self._taps[publication] = AudioTap(
                publication,
                room,
                lambda: self._nickname_of(peer_id),
                consumers,
                self._buffer_seconds,
            )

    def retap(self, room: str) -> None:
        """A consumer started accepting ``room``: tap its publications for it from now on."""
        consumers = self.consumers_for(room)
        for publication, where in list(self._rooms.items()):
            if where != room:
                continue
            tap = self._taps.get(publication)
            if tap is None:
                self.publication_added(room, publication)
                continue
            for consumer in consumers:
                tap.add_consumer(consumer)

    async def listen(self, room: str, peer_id: str | None, sink: Sink) -> LiveStream:
        """A live listener (``WS /ws/audio``) of ``room`` or of one participant, fed from now
        on by the :class:`LiveAudio` consumer; ``close()`` ends it."""
        listener = self._live_audio().listen(room, peer_id, sink)
        self.retap(room)
        return LocalStream(self, listener)

    async def _stop_listening(self, listener: Listener) -> None:
        await self._live_audio().stop(listener)
        self.untap(listener.room)

    def _live_audio(self) -> LiveAudio:
        live = next((c for c in self.consumers if isinstance(c, LiveAudio)), None)
        if live is None:
            raise ProtocolError("unsupported", "live audio needs a relay server (--media relay)")
        return live

    def untap(self, room: str) -> None:
        """A consumer stopped accepting ``room`` (its last live listener left): stop feeding
        it, and stop decoding the room's publications if no consumer wants them any more."""
        wanted = self.consumers_for(room)
        for publication, tap in list(self._taps.items()):
            if tap.room != room:
                continue
            if not wanted:
                self._close_tap(publication)
                continue
            for lane in tap.remove_consumers(wanted):
                self._in_background(lane.finish(room, tap.peer_id, FINISH_TIMEOUT))

    def consumers_for(self, room: str) -> list[AudioConsumer]:
        return [consumer for consumer in self.consumers if consumer.accepts(room)]

    def has_captions(self, room: str) -> bool:
        return any(isinstance(c, SpeechRecognizer) for c in self.consumers_for(room))

    def publication_removed(self, publication: Publication) -> None:
        """Stop tapping; consumers finish and finalize in the background."""
        self._rooms.pop(publication, None)
        self._close_tap(publication)

    def _close_tap(self, publication: Publication) -> None:
        tap = self._taps.pop(publication, None)
        if tap is None:
            return
        for lane in tap.lanes:
            self._dropped_before[lane.consumer.name] = (
                self._dropped_before.get(lane.consumer.name, 0) + lane.dropped
            )
        self._in_background(tap.close())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def is_recording(self, room: str) -> bool:
        return any(
            isinstance(consumer, WavRecorder) and consumer.is_recording(room)
            for consumer in self.consumers
        )

    def stats(self) -> dict[str, Any]:
        dropped = dict(self._dropped_before)
        delivered: dict[str, int] = {}
        for tap in self._taps.values():
            for lane in tap.lanes:
                name = lane.consumer.name
                dropped[name] = dropped.get(name, 0) + lane.dropped
                delivered[name] = delivered.get(name, 0) + lane.delivered
        return {
            "consumers": [consumer.name for consumer in self.consumers],
            "captions": [
                {**asdict(c.stats), "cpu_per_speech_second": c.stats.cpu_per_speech_second}
                for c in self.consumers
                if isinstance(c, SpeechRecognizer)
            ],
            "taps": len(self._taps),
            "delivered_chunks": delivered,
            "dropped_chunks": dropped,
        }

    async def close(self) -> None:
        for publication in list(self._taps):
            self.publication_removed(publication)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for consumer in self.consumers:
            try:
                await consumer.close()
            except Exception:
                logger.exception("audio consumer %s failed to close", consumer.name)

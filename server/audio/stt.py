"""Live captions: voice-activity detection cuts utterances, an offline engine transcribes them.

The pieces, from the audio inwards:

* :class:`~.vad.VoiceSegmenter` (webrtcvad) runs on the event loop.
* Each finished utterance goes to a :class:`~.engines.Recognizer` engine in a worker
  pool (:class:`~.engines.EnginePool`; processes by default, see ``engines``).
* Per participant at most one utterance is being transcribed and ``max_pending``
  wait; beyond that the oldest waiting one is dropped and counted, so a slow engine
  costs captions, never memory or the caller's time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..tasks import cancel_and_wait
from .consumer import (
    EVERY_ROOM,
    AudioChunk,
    BaseConsumer,
    RoomOutput,
    RoomPatterns,
)
from .engines import EnginePool, PocketSphinxRecognizer, RecognizerFactory
from .transcripts import TranscriptStore
from .vad import Utterance, VoiceSegmenter

logger = logging.getLogger(__name__)

PARTIAL_EVERY = 1.0  # seconds of new speech between partial captions (--stt-partials)
# Each partial re-decodes the utterance from its start; spacing them geometrically
# (every x1.5 of its length at most) bounds their cost at ~3x the final decode.
PARTIAL_GROWTH = 1.5


def next_partial_due(length: float, every: float) -> float:
    """After a partial caption of ``length`` seconds, the length at which the next is due."""
    return max(length + every, length * PARTIAL_GROWTH)


@dataclass
class RecognizerStats:
    """Counters for /stats and for tuning ``workers``."""

    utterances: int = 0  # cut by the VAD
    transcripts: int = 0  # emitted with text
    empty: int = 0  # the engine heard no words
    dropped: int = 0  # skipped because recognition fell behind
    dropped_seconds: float = 0.0
    failed: int = 0  # the engine raised
    partials: int = 0  # emitted with final: False
    speech_seconds: float = 0.0  # audio of the utterances transcribed
    engine_cpu_seconds: float = 0.0  # CPU the engine spent on them, partials included

    @property
    def cpu_per_speech_second(self) -> float:
        """Fraction of one core a continuously speaking participant costs."""
        return self.engine_cpu_seconds / self.speech_seconds if self.speech_seconds else 0.0


@dataclass
class _Speaker:
    room: str
    peer_id: str
    nickname: str
    segmenter: VoiceSegmenter
    pending: deque[tuple[Utterance, float]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    partial_start: float | None = None  # the utterance the next partial is for
    partial_due: float = 0.0  # its speech length at which that partial is due


class SpeechRecognizer(BaseConsumer):
    """Emits ``transcript`` events with each participant's recognized utterances.

    Every event is ``{"peer_id", "nickname", "text", "start", "end", "final": True}``
    (wall-clock seconds); when a ``store`` is given the entry is added to it before it
    is emitted, so a client that fetches the transcript on the event sees the line.
    ``rooms``: which rooms get captions.

    ``partial_every``: while someone speaks, also transcribe their utterance so far
    each time it has grown by that many seconds (or by half, once it is long) and
    emit it with ``"final": False`` (never stored; the final event for the same
    ``start`` replaces it). A partial is only started when that speaker's previous
    transcription is done, so partials never queue up; each one decodes the utterance
    from its start, which adds up to about three times the final decode.
    """

    name = "captions"

    def __init__(
        self,
        engine: RecognizerFactory = PocketSphinxRecognizer,
        *,
        store: TranscriptStore | None = None,
        workers: int | None = None,
        isolation: Literal["process", "thread"] = "process",
        segmenter: Callable[[], VoiceSegmenter] = VoiceSegmenter,
        max_pending: int = 2,
        max_delay: float = 30.0,
        finalize_timeout: float = 15.0,
        rooms: RoomPatterns = EVERY_ROOM,
        partial_every: float | None = None,
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.stats = RecognizerStats()
        self._pool = EnginePool(engine, workers or max(1, (os.cpu_count() or 2) // 2), isolation)
        self._new_segmenter = segmenter
        self._max_pending = max_pending
        self._max_delay = max_delay
        self._finalize_timeout = finalize_timeout
        self._partial_every = partial_every
        self._speakers: dict[tuple[str, str], _Speaker] = {}
        self._warm_up: asyncio.Task[None] | None = None
        self._last_drop_log = -float("inf")

    async def start(self, output: RoomOutput) -> None:
        await super().start(output)
        self._warm_up = asyncio.create_task(self._load_engines())

    async def wait_ready(self) -> None:
        """Wait until the engines are loaded (``start`` does not wait for them)."""
        if self._warm_up is not None:
            await asyncio.shield(self._warm_up)

    async def on_audio(self, chunk: AudioChunk) -> None:
        key = (chunk.room, chunk.peer_id)
        speaker = self._speakers.get(key)
        if speaker is None:
            speaker = self._speakers[key] = _Speaker(
                chunk.room, chunk.peer_id, chunk.nickname, self._new_segmenter()
            )
        speaker.nickname = chunk.nickname
        for utterance in speaker.segmenter.feed(chunk.pcm, chunk.timestamp):
            self._enqueue(speaker, utterance)
        if self._partial_every is not None:
            self._start_partial(speaker, self._partial_every)

    async def participant_left(self, room: str, peer_id: str) -> None:
        speaker = self._speakers.pop((room, peer_id), None)
        if speaker is None:
            return
        last = speaker.segmenter.flush()
        if last is not None:
            self._enqueue(speaker, last)
        worker = speaker.worker
        if worker is None or worker.done():
            return
        done, _ = await asyncio.wait({worker}, timeout=self._finalize_timeout)
        if not done:
            logger.warning(
                "captions for %s not done %.0f s after they left; dropping the rest",
                peer_id,
                self._finalize_timeout,
            )
            await cancel_and_wait(worker)
            for utterance, _ in speaker.pending:
                self._count_drop(utterance)
            speaker.pending.clear()

    async def close(self) -> None:
        await asyncio.gather(
            *(self.participant_left(room, peer) for room, peer in list(self._speakers))
        )
        if self._warm_up is not None and not self._warm_up.done():
            self._warm_up.cancel()
        await self._pool.shutdown(timeout=5.0)

    async def _load_engines(self) -> None:
        started = time.monotonic()
        try:
            await self._pool.warm_up()
        except Exception:
            logger.exception("loading the speech engine failed")
        else:
            logger.info("speech engine ready in %.1f s", time.monotonic() - started)

    def _enqueue(self, speaker: _Speaker, utterance: Utterance) -> None:
        self.stats.utterances += 1
        if len(speaker.pending) >= self._max_pending:
            oldest, _ = speaker.pending.popleft()
            self._count_drop(oldest)
        speaker.pending.append((utterance, time.monotonic()))
        if speaker.worker is None or speaker.worker.done():
            speaker.worker = asyncio.create_task(self._transcribe_pending(speaker))

    async def _transcribe_pending(self, speaker: _Speaker) -> None:
        """Transcribe one speaker's utterances in order, one at a time."""
        while speaker.pending:
            utterance, queued = speaker.pending.popleft()
            if time.monotonic() - queued > self._max_delay:
                self._count_drop(utterance)
                continue
            try:
                text, cpu = await self._pool.transcribe(utterance.pcm)
            except Exception:
                self.stats.failed += 1
                logger.exception("speech recognition failed for %s", speaker.peer_id)
                continue
            self.stats.speech_seconds += utterance.duration
            self.stats.engine_cpu_seconds += cpu
            text = " ".join(text.split())
            if not text:
                self.stats.empty += 1
                continue
            self.stats.transcripts += 1
            entry = self._entry(speaker, utterance, text, final=True)
            if self.store is not None:
                self.store.add(speaker.room, entry)
            await self.emit(speaker.room, "transcript", entry)

    def _start_partial(self, speaker: _Speaker, every: float) -> None:
        """Transcribe the utterance in progress if it grew enough and the worker is free."""
        start = speaker.segmenter.speech_start
        if start is None or speaker.pending:
            return
        if start != speaker.partial_start:
            speaker.partial_start, speaker.partial_due = start, every
        if speaker.segmenter.speech_length < speaker.partial_due:
            return
        if speaker.worker is not None and not speaker.worker.done():
            return
        so_far = speaker.segmenter.speech_so_far()
        assert so_far is not None
        speaker.partial_due = next_partial_due(so_far.duration, every)
        speaker.worker = asyncio.create_task(self._transcribe_partial(speaker, so_far))

    async def _transcribe_partial(self, speaker: _Speaker, so_far: Utterance) -> None:
        """Emit a partial caption, then transcribe any final utterance that came meanwhile."""
        try:
            text, cpu = await self._pool.transcribe(so_far.pcm)
        except Exception:  # the final transcription reports engine failures
            logger.debug("partial caption failed for %s", speaker.peer_id, exc_info=True)
        else:
            self.stats.engine_cpu_seconds += cpu
            text = " ".join(text.split())
            # Shown even when the utterance has ended meanwhile: its final caption is
            # transcribed next, by this same task, so the partial never follows it, and
            # on a busy machine it is the only early glimpse the listener gets.
            if text:
                self.stats.partials += 1
                entry = self._entry(speaker, so_far, text, final=False)
                await self.emit(speaker.room, "transcript", entry)
        await self._transcribe_pending(speaker)

    @staticmethod
    def _entry(
        speaker: _Speaker, utterance: Utterance, text: str, *, final: bool
    ) -> dict[str, Any]:
        return {
            "peer_id": speaker.peer_id,
            "nickname": speaker.nickname,
            "text": text,
            "start": utterance.start,
            "end": utterance.end,
            "final": final,
        }

    def _count_drop(self, utterance: Utterance) -> None:
        self.stats.dropped += 1
        self.stats.dropped_seconds += utterance.duration
        now = time.monotonic()
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            logger.warning(
                "speech recognition is behind: %d utterances (%.1f s of speech) skipped so far",
                self.stats.dropped,
                self.stats.dropped_seconds,
            )

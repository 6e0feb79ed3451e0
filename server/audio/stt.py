"""Live captions: voice-activity detection cuts utterances, an offline engine transcribes them.

The pieces, from the audio inwards:

* :class:`VoiceSegmenter` (webrtcvad, 30 ms frames) runs on the event loop: it costs
  microseconds per frame and keeps per-participant order trivially.
* Each finished utterance goes to a :class:`Recognizer` engine in a worker pool. The
  default engine, PocketSphinx, holds the GIL for the whole decode (measured: a
  thread decoding 3 s of speech stalls the event loop for ~1 s), so by default the
  pool is made of *processes*; ``isolation="thread"`` suits engines that release the
  GIL or wait on the network (faster-whisper, cloud APIs).
* Per participant at most one utterance is being transcribed and ``max_pending``
  wait; beyond that the oldest waiting one is dropped and counted, so a slow engine
  costs captions, never memory or the caller's time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import webrtcvad

from .consumer import (
    BYTES_PER_SECOND,
    EVERY_ROOM,
    SAMPLE_RATE,
    AudioChunk,
    BaseConsumer,
    RoomOutput,
    RoomPatterns,
)
from .transcripts import TranscriptStore

logger = logging.getLogger(__name__)

FRAME_SECONDS = 0.03  # webrtcvad accepts 10, 20 or 30 ms frames
FRAME_BYTES = int(FRAME_SECONDS * BYTES_PER_SECOND)


class Recognizer(Protocol):
    """A speech-to-text engine: the text of one utterance of 16 kHz mono s16le audio.

    Each pool worker builds its own instance from a factory and calls it from one
    thread at a time, so an engine may keep state and need not be thread-safe. In the
    default process pool the factory must be picklable (a class or module-level
    function, or a ``functools.partial`` of one).
    """

    def transcribe(self, pcm: bytes) -> str: ...


RecognizerFactory = Callable[[], Recognizer]


class PocketSphinxRecognizer:
    """CMU PocketSphinx 5 with the US English models shipped inside the PyPI package.

    Keyword arguments are PocketSphinx configuration (``hmm``, ``lm``, ``dict``,
    ``kws``...), e.g. a smaller domain language model for better accuracy.
    """

    def __init__(self, **config: Any) -> None:
        from pocketsphinx import Decoder  # noqa: PLC0415 - only the workers need it

        config.setdefault("loglevel", "FATAL")
        self._decoder = Decoder(**config)

    def transcribe(self, pcm: bytes) -> str:
        if sys.byteorder == "big":
            swapped = array("h", pcm)
            swapped.byteswap()
            pcm = swapped.tobytes()
        decoder = self._decoder
        decoder.start_utt()
        # full_utt: normalise the cepstra over this utterance, not a running estimate
        # that a new speaker or a fresh decoder would have wrong.
        decoder.process_raw(pcm, no_search=False, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return clean_text(hypothesis.hypstr) if hypothesis is not None else ""


def clean_text(text: str) -> str:
    """Drop engine markup: filler tokens like ``<sil>``/``[NOISE]`` and ``word(2)`` variants."""
    text = re.sub(r"<[^>]*>|\[[^\]]*\]|\(\d+\)", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech: its audio (with a little context) and wall-clock span."""

    pcm: bytes
    start: float  # wall-clock time of the first sample in ``pcm``
    end: float  # wall-clock time the last voiced frame ends

    @property
    def duration(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND


class VoiceSegmenter:
    """Cuts one participant's audio into utterances with webrtcvad.

    Speech starts when ``start_ratio`` of the last ``start`` seconds of 30 ms frames are
    voiced (those frames are kept, so the first syllable is not lost); it ends when
    ``end_ratio`` of the last ``end`` seconds are unvoiced, or at ``max_length``. The
    utterance keeps ``tail`` seconds after its last voiced frame.
    """

    def __init__(
        self,
        aggressiveness: int = 2,
        start: float = 0.3,
        start_ratio: float = 0.8,
        end: float = 0.6,
        end_ratio: float = 0.9,
        max_length: float = 15.0,
        tail: float = 0.3,
    ) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._start_frames = max(1, round(start / FRAME_SECONDS))
        self._start_voiced = start_ratio * self._start_frames
        self._end_frames = max(1, round(end / FRAME_SECONDS))
        self._end_unvoiced = end_ratio * self._end_frames
        self._max_frames = max(self._start_frames + 1, round(max_length / FRAME_SECONDS))
        self._tail_frames = round(tail / FRAME_SECONDS)
        self._buffer = bytearray()
        self._buffer_time = 0.0
        # Before speech: the last few frames, as (frame, time, voiced).
        self._ring: deque[tuple[bytes, float, bool]] = deque(maxlen=self._start_frames)
        # During speech: the frames so far and the voicing of the most recent ones.
        self._frames: list[bytes] = []
        self._recent: deque[bool] = deque(maxlen=self._end_frames)
        self._start_time = 0.0
        self._voiced_frames = 0  # frames up to and including the last voiced one
        self._voiced_end = 0.0

    @property
    def in_speech(self) -> bool:
        return bool(self._frames)

    def feed(self, pcm: bytes, timestamp: float) -> list[Utterance]:
        """Add audio starting at wall-clock ``timestamp``; return the utterances it ended."""
        if not self._buffer:
            self._buffer_time = timestamp
        self._buffer += pcm[: len(pcm) - len(pcm) % 2]  # whole samples only
        finished: list[Utterance] = []
        offset = 0
        while len(self._buffer) - offset >= FRAME_BYTES:
            frame = bytes(self._buffer[offset : offset + FRAME_BYTES])
            offset += FRAME_BYTES
            utterance = self._step(frame, self._buffer_time)
            self._buffer_time += FRAME_SECONDS
            if utterance is not None:
                finished.append(utterance)
        del self._buffer[:offset]
        return finished

    def flush(self) -> Utterance | None:
        """End the utterance in progress (the speaker left); forget partial frames."""
        self._buffer.clear()
        self._ring.clear()
        return self._cut() if self.in_speech else None

    def _step(self, frame: bytes, frame_time: float) -> Utterance | None:
        voiced = self._vad.is_speech(frame, SAMPLE_RATE)
        if not self._frames:
            self._ring.append((frame, frame_time, voiced))
            if (
                len(self._ring) == self._start_frames
                and sum(v for _, _, v in self._ring) >= self._start_voiced
            ):
                self._frames = [f for f, _, _ in self._ring]
                self._start_time = self._ring[0][1]
                self._voiced_frames = len(self._frames)
                self._voiced_end = frame_time + FRAME_SECONDS
                self._recent.clear()
                self._ring.clear()
            return None
        self._frames.append(frame)
        self._recent.append(voiced)
        if voiced:
            self._voiced_frames = len(self._frames)
            self._voiced_end = frame_time + FRAME_SECONDS
        silent_end = (
            len(self._recent) == self._end_frames
            and self._recent.count(False) >= self._end_unvoiced
        )
        if silent_end or len(self._frames) >= self._max_frames:
            return self._cut()
        return None

    def _cut(self) -> Utterance:
        kept = self._frames[: self._voiced_frames + self._tail_frames]
        utterance = Utterance(b"".join(kept), self._start_time, self._voiced_end)
        self._frames = []
        self._recent.clear()
        return utterance


# --- worker side: runs in the pool's processes or threads --------------------------------

_worker = threading.local()


def _init_worker(factory: RecognizerFactory, isolation: str, parent_pid: int) -> None:
    """Build this worker's engine once.

    A process worker also ignores Ctrl-C (the terminal sends it to the whole process
    group; the server shuts the pool down) and exits when the server dies without
    shutting it down (SIGKILL, OOM killer), which would otherwise leave it running.
    """
    if isolation == "process":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(
            target=_exit_with_parent, args=(parent_pid,), name="stt-watchdog", daemon=True
        ).start()
    _worker.engine = factory()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def _transcribe(pcm: bytes) -> tuple[str, float]:
    """The engine's text for ``pcm`` and the CPU seconds it took."""
    started = time.thread_time()
    text = _worker.engine.transcribe(pcm) if pcm else ""
    return text, time.thread_time() - started


class _EnginePool:
    """The workers that run engines; rebuilt (at most every ``retry_after`` s) if broken."""

    def __init__(
        self,
        factory: RecognizerFactory,
        workers: int,
        isolation: Literal["process", "thread"],
        retry_after: float = 10.0,
    ) -> None:
        self._factory = factory
        self._workers = workers
        self._isolation = isolation
        self._retry_after = retry_after
        self._executor: concurrent.futures.Executor | None = None
        self._broken_at = -float("inf")
        self._closed = False

    def _get(self) -> concurrent.futures.Executor:
        if self._executor is not None:
            return self._executor
        if self._closed:
            raise RuntimeError("the speech recognizer is closed")
        if time.monotonic() - self._broken_at < self._retry_after:
            raise RuntimeError("the speech engine failed recently; not retrying yet")
        initargs = (self._factory, self._isolation, os.getpid())
        if self._isolation == "process":
            # spawn, not fork: the server has threads (aiortc, executors) a fork would break.
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=initargs,
            )
        else:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._workers,
                thread_name_prefix="stt",
                initializer=_init_worker,
                initargs=initargs,
            )
        return self._executor

    async def transcribe(self, pcm: bytes) -> tuple[str, float]:
        executor = self._get()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, _transcribe, pcm)
        except concurrent.futures.BrokenExecutor:
            logger.error("the speech engine's worker pool broke; rebuilding it later")
            self._broken_at = time.monotonic()
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    async def warm_up(self) -> None:
        """Start every worker and load its engine now rather than at the first utterance."""
        await asyncio.gather(*(self.transcribe(b"") for _ in range(self._workers)))

    async def shutdown(self, timeout: float) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        waiting = asyncio.ensure_future(
            asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        )
        done, _ = await asyncio.wait({waiting}, timeout=timeout)
        if done:
            return
        logger.warning("speech engine workers did not stop within %.0f s", timeout)
        # A stuck engine: processes can be terminated (threads cannot be).
        processes = getattr(executor, "_processes", None) or {}
        for process in list(processes.values()):
            process.terminate()


# --- the consumer ----------------------------------------------------------------------------


@dataclass
class RecognizerStats:
    """Counters for /stats and for tuning ``workers``."""

    utterances: int = 0  # cut by the VAD
    transcripts: int = 0  # emitted with text
    empty: int = 0  # the engine heard no words
    dropped: int = 0  # skipped because recognition fell behind
    dropped_seconds: float = 0.0
    failed: int = 0  # the engine raised
    speech_seconds: float = 0.0  # audio the engine processed
    engine_cpu_seconds: float = 0.0  # CPU the engine spent on it

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


class SpeechRecognizer(BaseConsumer):
    """Emits ``transcript`` events with each participant's recognized utterances.

    Every event is ``{"peer_id", "nickname", "text", "start", "end", "final": True}``
    (wall-clock seconds); when a ``store`` is given the entry is added to it before it
    is emitted, so a client that fetches the transcript on the event sees the line.
    ``rooms``: which rooms get captions.
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
    ) -> None:
        self.store = store
        self.rooms = rooms
        self.stats = RecognizerStats()
        self._pool = _EnginePool(engine, workers or max(1, (os.cpu_count() or 2) // 2), isolation)
        self._new_segmenter = segmenter
        self._max_pending = max_pending
        self._max_delay = max_delay
        self._finalize_timeout = finalize_timeout
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
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
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
            entry = {
                "peer_id": speaker.peer_id,
                "nickname": speaker.nickname,
                "text": text,
                "start": utterance.start,
                "end": utterance.end,
                "final": True,
            }
            if self.store is not None:
                self.store.add(speaker.room, entry)
            await self.emit(speaker.room, "transcript", entry)

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

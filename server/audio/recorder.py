"""Recording: one crash-safe WAV file per participant per session.

Audio is buffered in memory for ``flush_interval`` seconds and then appended in a
worker thread, after which the RIFF and data sizes in the header are rewritten. The
file is opened unbuffered, so every completed flush is in the kernel's page cache:
a SIGKILLed server leaves a valid WAV missing at most the last unflushed second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .consumer import (
    BYTES_PER_SECOND,
    CHANNELS,
    EVERY_ROOM,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    AudioChunk,
    BaseConsumer,
    RoomPatterns,
    local_stamp,
)

logger = logging.getLogger(__name__)

HEADER_SIZE = 44
# A RIFF size field is 32 bits; stay well clear of it (about 37 hours at 16 kHz s16).
MAX_DATA_BYTES = 0xFFFF_FFFF - HEADER_SIZE - 1024 * 1024
_ZEROS = bytes(BYTES_PER_SECOND)


def wav_header(data_bytes: int) -> bytes:
    """The canonical 44-byte PCM WAV header for ``data_bytes`` of 16 kHz mono s16le."""
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", HEADER_SIZE - 8 + data_bytes),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH",
                16,  # fmt chunk size
                1,  # PCM
                CHANNELS,
                SAMPLE_RATE,
                BYTES_PER_SECOND,
                CHANNELS * SAMPLE_WIDTH,  # block align
                SAMPLE_WIDTH * 8,
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def safe_name(text: str, fallback: str = "_", max_length: int = 64) -> str:
    """``text`` as one readable path component: no separators, no ``..``, no leading dot.

    Letters and digits of any script survive; every other run of characters (with the
    dots and dashes around it) becomes one ``_``.
    """
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[^\w.-]+", "_", text)
    text = re.sub(r"[._-]*_[._-]*", "_", text)  # "a / ../b" -> "a_b"
    text = re.sub(r"\.{2,}", ".", text)
    text = text.strip("._-")[:max_length].rstrip("._-")
    return text or fallback


# (room, peer_id, file path, seconds): a participant's recording is complete on disk.
RecordingFinished = Callable[[str, str, str, float], None]


class _WavFile:
    """One open recording. Every method blocks, so the recorder calls them in a thread.

    A lock makes the methods safe to call from several threads, because a cancelled
    ``asyncio.to_thread`` call keeps running while the next one may already start.
    """

    def __init__(self, directory: Path, stem: str) -> None:
        self._lock = threading.Lock()
        self.data_bytes = 0
        self._since_sync = 0
        directory.mkdir(parents=True, exist_ok=True)
        self.path, self._file = self._create(directory, stem)
        self._file.write(wav_header(0))

    @staticmethod
    def _create(directory: Path, stem: str) -> tuple[Path, BinaryIO]:
        """Open a new file exclusively; a second session in the same second gets ``-2``."""
        for attempt in range(1, 1000):
            suffix = "" if attempt == 1 else f"-{attempt}"
            path = directory / f"{stem}{suffix}.wav"
            try:
                # buffering=0: each write reaches the kernel at once (survives SIGKILL).
                handle = open(path, "xb", buffering=0, opener=_private_opener)  # noqa: SIM115
            except FileExistsError:
                continue
            return path, handle
        raise FileExistsError(f"no free file name for {directory / stem}.wav")

    @property
    def closed(self) -> bool:
        return self._file.closed

    def append(self, pcm: bytes, silence_before: int, sync_every: int) -> None:
        """Append ``silence_before`` zero bytes and ``pcm``, then make the header true."""
        with self._lock:
            if self._file.closed:
                return
            while silence_before > 0:
                piece = _ZEROS[: min(silence_before, len(_ZEROS))]
                self._write_all(piece)
                silence_before -= len(piece)
            self._write_all(pcm)
            self._write_sizes()
            if sync_every and self._since_sync >= sync_every:
                os.fsync(self._file.fileno())
                self._since_sync = 0

    def finish(self) -> None:
        """Write the final sizes, fsync and close; calling it again does nothing."""
        with self._lock:
            if self._file.closed:
                return
            try:
                self._write_sizes()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if not written:
                raise OSError(f"short write to {self.path}")
            view = view[written:]
        self.data_bytes += len(data)
        self._since_sync += len(data)

    def _write_sizes(self) -> None:
        # The data goes first and the sizes after, so a kill in between leaves a header
        # that under-reports: still a valid file.
        self._file.seek(4)
        self._file.write(struct.pack("<I", HEADER_SIZE - 8 + self.data_bytes))
        self._file.seek(40)
        self._file.write(struct.pack("<I", self.data_bytes))
        self._file.seek(0, os.SEEK_END)


def _private_opener(path: str, flags: int) -> int:
    """Recordings are personal data: owner read/write, group read."""
    return os.open(path, flags, 0o640)


@dataclass
class _Session:
    """One participant's recording in progress, owned by the event loop."""

    room: str
    peer_id: str
    nickname: str
    label: str  # "<nickname>-<peer>", the file name after the date
    next_timestamp: float  # wall-clock time the next byte should have
    pending: bytearray = field(default_factory=bytearray)
    pending_silence: int = 0
    file: _WavFile | None = None
    failed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WavRecorder(BaseConsumer):
    """Records each participant to ``record_dir/<room>/<date>-<nickname>-<peer>.wav``.

    ``flush_interval`` is the most audio a SIGKILL can lose. ``fill_gaps_over``: when a
    chunk's timestamp is that many seconds later than the audio so far (the tap dropped
    chunks, or the sender stopped sending during silence), the gap is recorded as
    silence (up to ``max_gap`` seconds), so positions in the file stay true to the
    wall clock and to the transcript; ``None`` records chunks back to back.
    ``max_file_seconds`` starts a new file when one grows that long. ``rooms``: which
    rooms to record.
    """

    name = "recorder"

    def __init__(
        self,
        record_dir: Path,
        *,
        flush_interval: float = 1.0,
        fsync_interval: float = 30.0,
        fill_gaps_over: float | None = 1.0,
        max_gap: float = 600.0,
        max_file_seconds: float = MAX_DATA_BYTES / BYTES_PER_SECOND,
        rooms: RoomPatterns = EVERY_ROOM,
        on_finished: RecordingFinished | None = None,
    ) -> None:
        self.record_dir = Path(record_dir)
        self._on_finished = on_finished
        self.rooms = rooms
        self._flush_bytes = _even(flush_interval * BYTES_PER_SECOND)
        self._sync_bytes = _even(fsync_interval * BYTES_PER_SECOND)
        self._gap_threshold = fill_gaps_over
        self._max_gap = max_gap
        self._max_file_bytes = min(_even(max_file_seconds * BYTES_PER_SECOND), MAX_DATA_BYTES)
        self._sessions: dict[tuple[str, str], _Session] = {}

    def is_recording(self, room: str) -> bool:
        """Whether anyone in ``room`` is being recorded right now."""
        return any(key[0] == room for key in self._sessions)

    async def on_audio(self, chunk: AudioChunk) -> None:
        key = (chunk.room, chunk.peer_id)
        session = self._sessions.get(key)
        if session is None:
            session = self._begin(chunk)
            await self.emit(chunk.room, "recording", {"active": True})
        if session.failed:
            return
        pcm = chunk.pcm[: len(chunk.pcm) - len(chunk.pcm) % SAMPLE_WIDTH]
        session.pending_silence += self._gap_bytes(session, chunk.timestamp)
        session.pending += pcm
        session.next_timestamp = chunk.timestamp + len(pcm) / BYTES_PER_SECOND
        if len(session.pending) + session.pending_silence >= self._flush_bytes:
            async with session.lock:
                await self._flush(session)

    async def participant_left(self, room: str, peer_id: str) -> None:
        session = self._sessions.pop((room, peer_id), None)
        if session is None:
            return
        async with session.lock:
            await self._flush(session)
            await self._finish(session)
        if not self.is_recording(room):
            await self.emit(room, "recording", {"active": False})

    async def close(self) -> None:
        await asyncio.gather(
            *(self.participant_left(room, peer) for room, peer in list(self._sessions))
        )

    def _begin(self, chunk: AudioChunk) -> _Session:
        session = _Session(
            room=chunk.room,
            peer_id=chunk.peer_id,
            nickname=chunk.nickname,
            label=f"{safe_name(chunk.nickname, 'anon', 40)}-{safe_name(chunk.peer_id, 'peer', 40)}",
            next_timestamp=chunk.timestamp,
        )
        self._sessions[(chunk.room, chunk.peer_id)] = session
        logger.info("recording %s (%s) in room %r", chunk.peer_id, chunk.nickname, chunk.room)
        return session

    def _gap_bytes(self, session: _Session, timestamp: float) -> int:
        if self._gap_threshold is None:
            return 0
        gap = timestamp - session.next_timestamp
        if gap < self._gap_threshold:
            return 0
        if gap > self._max_gap:
            logger.warning(
                "recording %s: %.0f s gap in the audio is over the %.0f s limit; "
                "recording it as %.0f s of silence",
                session.peer_id,
                gap,
                self._max_gap,
                self._max_gap,
            )
            gap = self._max_gap
        return _even(gap * BYTES_PER_SECOND)

    async def _flush(self, session: _Session) -> None:
        """Write what is pending (in a thread), rolling over to a new file when full."""
        while not session.failed and (session.pending or session.pending_silence):
            pcm, silence = bytes(session.pending), session.pending_silence
            session.pending.clear()
            session.pending_silence = 0
            try:
                if session.file is None:
                    # Named after the wall-clock time of its first sample.
                    first = session.next_timestamp - (len(pcm) + silence) / BYTES_PER_SECOND
                    session.file = await asyncio.to_thread(
                        _WavFile,
                        self.record_dir / safe_name(session.room, "room"),
                        f"{local_stamp(first)}-{session.label}",
                    )
                room_left = self._max_file_bytes - session.file.data_bytes
                if silence + len(pcm) > room_left:
                    # Fill this file up and carry the rest over to a fresh one.
                    take_silence = min(silence, room_left)
                    take_pcm = _even(room_left - take_silence)
                    session.pending[:0] = pcm[take_pcm:]
                    session.pending_silence = silence - take_silence
                    pcm, silence = pcm[:take_pcm], take_silence
                await asyncio.to_thread(session.file.append, pcm, silence, self._sync_bytes)
                if session.file.data_bytes >= self._max_file_bytes:
                    await self._finish(session)
            except OSError:
                logger.exception(
                    "recording %s in room %r failed; no more audio is recorded for them",
                    session.peer_id,
                    session.room,
                )
                session.failed = True
                session.pending.clear()
                session.pending_silence = 0

    async def _finish(self, session: _Session) -> None:
        wav = session.file
        if wav is None:
            return
        session.file = None
        try:
            await asyncio.to_thread(wav.finish)
        except OSError:
            logger.exception("finishing recording %s failed", wav.path)
            return
        seconds = wav.data_bytes / BYTES_PER_SECOND
        logger.info("recorded %s: %.1f s", wav.path, seconds)
        if self._on_finished is not None:
            self._on_finished(session.room, session.peer_id, str(wav.path), seconds)


def _even(value: float) -> int:
    """A byte count rounded down to whole s16 samples."""
    return int(value) // SAMPLE_WIDTH * SAMPLE_WIDTH

"""The contract between the relay's audio tap and the components that use the audio.

The relay decodes every participant's audio, resamples it to 16 kHz mono s16le and
hands it to each consumer from one asyncio task per (participant, consumer), so a
consumer sees one participant's chunks strictly in order but may see several
participants interleaved.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
SAMPLE_WIDTH = 2  # bytes per sample: signed 16-bit little-endian
CHANNELS = 1
BYTES_PER_SECOND = SAMPLE_RATE * SAMPLE_WIDTH * CHANNELS


@dataclass(frozen=True)
class AudioChunk:
    """A piece of one participant's audio: 16 kHz mono s16le, usually 20 ms (640 bytes)."""

    room: str
    peer_id: str
    nickname: str
    pcm: bytes
    timestamp: float  # wall-clock time (time.time()) of the chunk's first sample

    @property
    def duration(self) -> float:
        """Seconds of audio in the chunk."""
        return len(self.pcm) / BYTES_PER_SECOND


class RoomPatterns:
    """The rooms a consumer works in: names or shell-style patterns (``*``, ``?``, ``[ab]``),
    case-sensitive like room names. The default, ``*``, is every room."""

    def __init__(self, patterns: Iterable[str] = ("*",)) -> None:
        self.patterns = tuple(patterns)
        if not self.patterns:
            raise ValueError("at least one room name or pattern is needed")

    def __contains__(self, room: str) -> bool:
        return any(fnmatchcase(room, pattern) for pattern in self.patterns)

    def __repr__(self) -> str:
        return f"RoomPatterns({', '.join(self.patterns)})"


EVERY_ROOM = RoomPatterns()


@runtime_checkable
class RoomOutput(Protocol):
    """How a consumer reports results to a room's clients (the server implements this)."""

    async def emit(self, room: str, event: str, data: dict[str, Any]) -> None: ...


@runtime_checkable
class AudioConsumer(Protocol):
    """What the relay drives: start once, audio per participant, finalize, close once.

    Only rooms the consumer ``accepts`` are tapped for it; a room no consumer accepts
    is never decoded.
    """

    name: str

    def accepts(self, room: str) -> bool: ...

    async def start(self, output: RoomOutput) -> None: ...

    async def on_audio(self, chunk: AudioChunk) -> None: ...

    async def participant_left(self, room: str, peer_id: str) -> None: ...

    async def close(self) -> None: ...


class BaseConsumer:
    """No-op defaults for every hook, so a custom consumer only overrides what it needs.

    ``rooms`` limits the consumer to some rooms (every room by default). ``start``
    keeps the output; ``emit`` sends through it and logs (rather than raises) a
    failure, because a lost notification must not stop a consumer's own work.
    """

    name: str = "consumer"
    output: RoomOutput | None = None
    rooms: RoomPatterns = EVERY_ROOM

    def accepts(self, room: str) -> bool:
        return room in self.rooms

    async def start(self, output: RoomOutput) -> None:
        self.output = output

    async def on_audio(self, chunk: AudioChunk) -> None:
        return None

    async def participant_left(self, room: str, peer_id: str) -> None:
        return None

    async def close(self) -> None:
        return None

    async def emit(self, room: str, event: str, data: dict[str, Any]) -> None:
        """Send ``event`` to ``room`` if started; failures are logged, never raised."""
        if self.output is None:
            logger.debug("%s: not started, dropping %r for room %r", self.name, event, room)
            return
        try:
            await self.output.emit(room, event, data)
        except Exception:
            logger.exception("%s: emitting %r to room %r failed", self.name, event, room)


def samples(pcm: bytes) -> array[int]:
    """The s16le samples of ``pcm`` as an ``array('h')`` in native byte order."""
    values = array("h")
    values.frombytes(pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH])
    if sys.byteorder == "big":
        values.byteswap()
    return values


def rms(pcm: bytes) -> float:
    """Root-mean-square level of s16le audio, 0 (silence) to 32768 (full scale)."""
    values = samples(pcm)
    if not values:
        return 0.0
    return math.sqrt(math.fsum(v * v for v in values) / len(values))


def dbfs(pcm: bytes) -> float:
    """Level of s16le audio in dB relative to full scale (-inf for digital silence)."""
    level = rms(pcm)
    return 20 * math.log10(level / 32768) if level > 0 else -math.inf


def local_stamp(timestamp: float, fmt: str = "%Y%m%d-%H%M%S") -> str:
    """A wall-clock time in the server's local time zone, as file names and transcripts use."""
    return time.strftime(fmt, time.localtime(timestamp))

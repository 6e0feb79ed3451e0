"""Voice-activity segmentation: one participant's audio cut into utterances (webrtcvad).

It runs on the event loop: webrtcvad costs microseconds per 30 ms frame, and one
segmenter per participant keeps each participant's order trivially.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import webrtcvad

from .consumer import BYTES_PER_SECOND, SAMPLE_RATE

FRAME_SECONDS = 0.03  # webrtcvad accepts 10, 20 or 30 ms frames
FRAME_BYTES = int(FRAME_SECONDS * BYTES_PER_SECOND)


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

    @property
    def speech_start(self) -> float | None:
        """Wall-clock start of the utterance in progress (None between utterances)."""
        return self._start_time if self._frames else None

    @property
    def speech_length(self) -> float:
        """Seconds of audio in the utterance in progress so far."""
        return len(self._frames) * FRAME_SECONDS

    def speech_so_far(self) -> Utterance | None:
        """The utterance in progress as it stands, for partial captions."""
        if not self._frames:
            return None
        return Utterance(b"".join(self._frames), self._start_time, self._voiced_end)

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

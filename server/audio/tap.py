"""The relay's audio tap: one participant's decoded audio, resampled, fed to each consumer.

Every consumer gets its own bounded lane per participant: a consumer that falls
behind loses its oldest audio (counted), never slows the relay or the other
consumers, and sees one participant's chunks strictly in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import av
from aiortc.mediastreams import MediaStreamError

from ..tasks import cancel_and_wait
from .consumer import BYTES_PER_SECOND, SAMPLE_RATE, SAMPLE_WIDTH, AudioChunk, AudioConsumer
from .feed import DropOldestFeed

if TYPE_CHECKING:
    from ..media.publication import Publication

logger = logging.getLogger(__name__)

CHUNK_SECONDS = 0.02  # aiortc decodes Opus in 20 ms frames
FINISH_TIMEOUT = 15.0  # seconds a consumer may take to catch up and finalize a participant
RESYNC_AFTER = 0.5  # seconds of clock drift before chunk timestamps jump to wall clock


class ConsumerLane:
    """One consumer's audio of one participant: a drop-oldest feed, delivered in order."""

    def __init__(self, consumer: AudioConsumer, capacity: int) -> None:
        self.consumer = consumer
        self.delivered = 0
        self._feed = DropOldestFeed(self._deliver, capacity)
        self.offer = self._feed.offer

    @property
    def dropped(self) -> int:
        return self._feed.dropped

    async def _deliver(self, chunk: AudioChunk) -> None:
        try:
            await self.consumer.on_audio(chunk)
            self.delivered += 1
        except Exception:
            logger.exception("audio consumer %s failed", self.consumer.name)

    async def finish(self, room: str, peer_id: str, timeout: float) -> None:
        """Deliver what is queued (within ``timeout``), then let the consumer finalize."""
        await self._feed.drain(timeout)
        try:
            await self.consumer.participant_left(room, peer_id)
        except Exception:
            logger.exception("audio consumer %s failed to finalize %s", self.consumer.name, peer_id)


class AudioTap:
    """Reads one audio publication's decoded frames and fans 16 kHz mono PCM out to lanes."""

    def __init__(
        self,
        publication: Publication,
        room: str,
        nickname: Callable[[], str],
        consumers: list[AudioConsumer],
        buffer_seconds: float,
    ) -> None:
        self.publication = publication
        self.room = room
        self.peer_id = publication.peer_id
        self._nickname = nickname
        # Our reader is quick: keep every frame.
        self._source = publication.subscribe_decoded(buffered=True)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._capacity = max(1, round(buffer_seconds / CHUNK_SECONDS))
        self.lanes = [ConsumerLane(consumer, self._capacity) for consumer in consumers]
        self._next_timestamp: float | None = None
        self._reader = asyncio.create_task(self._read())

    def add_consumer(self, consumer: AudioConsumer) -> None:
        """Feed one more consumer from now on (it started accepting the room late)."""
        if all(lane.consumer is not consumer for lane in self.lanes):
            self.lanes.append(ConsumerLane(consumer, self._capacity))

    def remove_consumers(self, keep: list[AudioConsumer]) -> list[ConsumerLane]:
        """Stop feeding the consumers not in ``keep``; their lanes, for the caller to finish."""
        removed = [lane for lane in self.lanes if lane.consumer not in keep]
        self.lanes = [lane for lane in self.lanes if lane.consumer in keep]
        return removed

    def _timestamp(self, duration: float) -> float:
        """Wall-clock start of the next chunk: continuous, re-synced after a gap."""
        now = time.time()
        expected = self._next_timestamp
        if expected is None or abs(now - duration - expected) > RESYNC_AFTER:
            expected = now - duration
        self._next_timestamp = expected + duration
        return expected

    async def _read(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = cast("av.AudioFrame", await self._source.track.recv())
                for resampled in self._resampler.resample(frame):
                    pcm = bytes(resampled.planes[0])[: resampled.samples * SAMPLE_WIDTH]
                    chunk = AudioChunk(
                        room=self.room,
                        peer_id=self.peer_id,
                        nickname=self._nickname(),
                        pcm=pcm,
                        timestamp=self._timestamp(len(pcm) / BYTES_PER_SECOND),
                    )
                    for lane in self.lanes:
                        lane.offer(chunk)

    async def close(self, finalize_timeout: float = FINISH_TIMEOUT) -> None:
        """Stop reading, let every consumer catch up and finalize this participant."""
        await cancel_and_wait(self._reader)
        self._source.close()
        await asyncio.gather(
            *(lane.finish(self.room, self.peer_id, finalize_timeout) for lane in self.lanes)
        )

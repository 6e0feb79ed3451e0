"""Live audio out of the tap, for listeners outside WebRTC (``WS /ws/audio``, see ws_audio.py).

A listener follows one participant of a room, or the whole room: then every
participant's 20 ms chunks are mixed (summed, clipped) by a ticker at the
chunks' pace. Each listener has a bounded queue per participant: a slow
listener loses its oldest audio and never slows the tap.
"""

from __future__ import annotations

import asyncio
from array import array
from collections import deque
from collections.abc import Awaitable, Callable

from ..tasks import cancel_and_wait
from .consumer import AudioChunk, BaseConsumer, samples

MIX_TICK = 0.02  # seconds: the tap's chunk length
MAX_QUEUED = 50  # chunks per participant a listener may fall behind (1 s)

Sink = Callable[[bytes], Awaitable[None]]


def mix(chunks: list[bytes]) -> bytes:
    """Sum s16le chunks sample by sample, clipped to 16 bits (the longest sets the length)."""
    if len(chunks) == 1:
        return chunks[0]
    length = max(len(chunk) for chunk in chunks) // 2
    total = [0] * length
    for chunk in chunks:
        for index, value in enumerate(samples(chunk)):
            total[index] += value
    mixed = array("h", (max(-32768, min(32767, value)) for value in total))
    return mixed.tobytes()


class Listener:
    """One listener: the participant it follows (None: the room's mix) and its queues."""

    def __init__(self, room: str, peer_id: str | None, sink: Sink) -> None:
        self.room = room
        self.peer_id = peer_id
        self.dropped = 0
        self._sink = sink
        self._queues: dict[str, deque[bytes]] = {}
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def offer(self, chunk: AudioChunk) -> None:
        if self.peer_id is not None and chunk.peer_id != self.peer_id:
            return
        queue = self._queues.setdefault(chunk.peer_id, deque())
        if len(queue) >= MAX_QUEUED:
            queue.popleft()
            self.dropped += 1
        queue.append(chunk.pcm)
        self._ready.set()

    def forget(self, peer_id: str) -> None:
        self._queues.pop(peer_id, None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not any(self._queues.values()):
                self._ready.clear()
                await self._ready.wait()
                next_tick = loop.time()
            pending = [queue.popleft() for queue in self._queues.values() if queue]
            if pending:
                await self._sink(mix(pending))
            if self.peer_id is None:  # the mix keeps the chunks' pace, one of each per tick
                next_tick += MIX_TICK
                await asyncio.sleep(max(0.0, next_tick - loop.time()))

    async def close(self) -> None:
        await cancel_and_wait(self._task)


class LiveAudio(BaseConsumer):
    """The audio consumer that serves live listeners; it accepts rooms somebody listens to."""

    name = "live"

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def accepts(self, room: str) -> bool:
        return bool(self._listeners.get(room))

    def listen(self, room: str, peer_id: str | None, sink: Sink) -> Listener:
        """Start feeding ``sink`` (the caller retaps the room so that audio flows)."""
        listener = Listener(room, peer_id, sink)
        self._listeners.setdefault(room, []).append(listener)
        return listener

    async def stop(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.room, [])
        if listener in listeners:
            listeners.remove(listener)
        if not listeners:
            self._listeners.pop(listener.room, None)
        await listener.close()

    @property
    def listeners(self) -> int:
        return sum(len(listeners) for listeners in self._listeners.values())

    async def on_audio(self, chunk: AudioChunk) -> None:
        for listener in self._listeners.get(chunk.room, ()):
            listener.offer(chunk)

    async def participant_left(self, room: str, peer_id: str) -> None:
        for listener in self._listeners.get(room, ()):
            listener.forget(peer_id)

    async def close(self) -> None:
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                await self.stop(listener)

"""An audio consumer that is far too slow, to prove the relay does not wait for it."""

from __future__ import annotations

import asyncio

from server.audio import AudioChunk, BaseConsumer


class SlowConsumer(BaseConsumer):
    """Takes 200 ms for every 20 ms chunk: it can only keep a tenth of the audio."""

    name = "slow"

    async def on_audio(self, chunk: AudioChunk) -> None:
        await asyncio.sleep(0.2)

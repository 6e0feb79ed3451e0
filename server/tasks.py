"""Stopping asyncio tasks without swallowing the stopper's own cancellation.

The usual ``task.cancel(); with suppress(CancelledError): await task`` has a trap:
if the *caller* is cancelled while it waits, the suppress swallows that too, and
the caller carries on as if nobody had asked it to stop. A peer's work queue
stopping a publication's task while the peer itself was being closed did exactly
that: the queue kept running, the close waited for it forever, and the participant
stayed in its room as a ghost.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished; an error it ended with is raised.

    A cancellation of the caller while it waits is not swallowed: it propagates.
    """
    if task is None:
        return
    if not task.done():
        task.cancel()
        await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error

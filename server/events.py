"""One gate in front of every Socket.IO event handler.

The gate looks up the participant, applies the per-connection rate limit, turns
:class:`ProtocolError` into an ``error`` event (plus ``{ok: false, error}`` when
the client asked for an ack), and keeps events of one connection in order.

Ordering: the server runs with ``async_handlers=False``, so python-socketio
awaits each handler before reading the connection's next event. Work that must
happen *after* the ack has been sent (the zoom-clone chat stage calls ``done()``
before notifying the room) is scheduled with :meth:`EventRouter.after_reply`;
the next event of the same connection waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import socketio

from .rooms import Participant, Roster
from .stats import Stats
from .validation import ProtocolError

logger = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]


def error_payload(event: str, error: ProtocolError) -> dict[str, str]:
    return {"code": error.code, "message": error.message, "event": event}


class EventRouter:
    """Registers handlers ``handler(participant, *args)`` behind the common gate."""

    def __init__(self, sio: socketio.AsyncServer, roster: Roster, stats: Stats) -> None:
        self._sio = sio
        self._roster = roster
        self._stats = stats
        self._after_reply: dict[str, list[asyncio.Task[None]]] = {}
        self._throttled: set[str] = set()
        sio.on("*", self._unknown_event)

    def on(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator: route Socket.IO ``event`` to ``handler(participant, *args)``."""

        def register(handler: Handler) -> Handler:
            async def gate(sid: str, *args: Any) -> Any:
                return await self._dispatch(event, handler, sid, args)

            self._sio.on(event, gate)
            return handler

        return register

    async def _dispatch(self, event: str, handler: Handler, sid: str, args: tuple[Any, ...]) -> Any:
        participant = self._roster.get(sid)
        if participant is None:
            return None
        if sid in self._after_reply:
            await self.settle(sid)
        self._stats.count_event(event)
        if not participant.limiter.try_take():
            return await self._refuse_flood(participant, event)
        self._throttled.discard(sid)
        try:
            return await handler(participant, *args)
        except ProtocolError as error:
            return await self.reject(participant, event, error)
        except Exception:
            logger.exception("handler for %r failed (connection %s)", event, sid)
            return await self.reject(
                participant,
                event,
                ProtocolError("internal_error", "the server could not handle this event"),
            )

    async def _refuse_flood(self, participant: Participant, event: str) -> dict[str, Any]:
        """Refuse an event over the rate limit; report it once per flood, not per event."""
        error = ProtocolError("rate_limited", "too many events; slow down")
        self._stats.count_error(error.code)
        if participant.sid not in self._throttled:
            self._throttled.add(participant.sid)
            await self._send_error(participant, error_payload(event, error))
        return {"ok": False, "error": error_payload(event, error)}

    async def reject(
        self, participant: Participant, event: str, error: ProtocolError
    ) -> dict[str, Any]:
        """Tell the client why its event was refused; the return value is the ack."""
        self._stats.count_error(error.code)
        logger.info("refused %r from %s: %s (%s)", event, participant.sid, error.code, error)
        payload = error_payload(event, error)
        await self._send_error(participant, payload)
        return {"ok": False, "error": payload}

    async def _send_error(self, participant: Participant, payload: dict[str, str]) -> None:
        if participant.outbox is not None:  # a /ws or HTTP participant (not Socket.IO)
            await participant.outbox.deliver("error", payload)
        else:
            await self._sio.emit("error", payload, to=participant.sid)

    async def _unknown_event(self, event: str, sid: str, *args: Any) -> Any:
        participant = self._roster.get(sid)
        if participant is None:
            return None
        self._stats.count_event("(unknown)")
        if not participant.limiter.try_take():
            return await self._refuse_flood(participant, str(event))
        name = str(event)[:64]
        return await self.reject(
            participant, name, ProtocolError("unknown_event", f"unknown event {name!r}")
        )

    def after_reply(self, participant: Participant, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` once the current handler's ack has been queued to the client."""
        task = asyncio.ensure_future(work)
        self._after_reply.setdefault(participant.sid, []).append(task)

    async def settle(self, sid: str) -> None:
        """Wait for work deferred by earlier events of this connection."""
        tasks = self._after_reply.pop(sid, None)
        if not tasks:
            return
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                logger.error("deferred work for %s failed", sid, exc_info=outcome)

    def forget(self, sid: str) -> None:
        self._throttled.discard(sid)
        self._after_reply.pop(sid, None)

"""Raised hands and reactions: the signals a call needs besides talking (native protocol).

A raised hand waits in an ordered queue per room until its owner lowers it or leaves;
a reaction is a moment's emoji from a small fixed set. Both pass through the
EventRouter, so they share the connection's rate limit with chat and every other event.
"""

from __future__ import annotations

import time
from typing import Any

from . import validation
from .events import EventRouter
from .rooms import Dialect, Participant, Roster
from .validation import expect_args
from .zoomclone import current_room

# The reactions the page offers; anything else is refused, so no client can send arbitrary text.
REACTIONS = ("👍", "👏", "❤️", "😂", "😮", "🎉")


class HandQueue:
    """Raised hands per room, first raised first.

    A view of the members' ``hand_raised_at``, so a hand goes wherever its participant is
    known: into other cluster nodes' mirrors, through a held place and its resume (on
    this node or another), and out with a leave (rooms.py). Hands raised on different
    machines are ordered by their clocks.
    """

    def __init__(self, roster: Roster) -> None:
        self._roster = roster

    async def raise_hand(self, participant: Participant) -> None:
        if participant.hand_raised_at is None:
            participant.hand_raised_at = time.time()
            await self._roster.state_changed(participant)

    async def lower(self, participant: Participant) -> None:
        if participant.hand_raised_at is not None:
            participant.hand_raised_at = None
            await self._roster.state_changed(participant)

    def queue(self, room: str) -> list[str]:
        """The peer ids with a raised hand in ``room``, in the order they were raised."""
        raised = [p for p in self._roster.members(room) if p.hand_raised_at is not None]
        raised.sort(key=lambda p: (p.hand_raised_at, p.peer_id))
        return [p.peer_id for p in raised]


def register_gesture_events(router: EventRouter, roster: Roster, hands: HandQueue) -> None:
    @router.on("raise_hand")
    async def raise_hand(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 1)
        raised = validation.boolean(validation.mapping(args[0], "hand").get("raised"), "raised")
        room = current_room(roster, participant)
        before = hands.queue(room)
        if raised:
            await hands.raise_hand(participant)
        else:
            await hands.lower(participant)
        queue = hands.queue(room)
        if queue != before:
            await roster.emit_to_dialect(
                room, Dialect.NATIVE, "hands", {"hands": queue}, skip=participant.sid
            )
        return {"ok": True, "hands": queue}

    @router.on("reaction")
    async def reaction(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 1)
        emoji = validation.mapping(args[0], "reaction").get("emoji")
        if emoji not in REACTIONS:
            raise validation.bad_request(f"emoji must be one of {' '.join(REACTIONS)}")
        room = current_room(roster, participant)
        await roster.emit_to_dialect(
            room,
            Dialect.NATIVE,
            "reaction",
            {"peer_id": participant.peer_id, "emoji": emoji},
            skip=participant.sid,
        )
        return {"ok": True}

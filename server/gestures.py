"""Raised hands and reactions: the signals a call needs besides talking (native protocol).

A raised hand waits in an ordered queue per room until its owner lowers it or leaves;
a reaction is a moment's emoji from a small fixed set. Both pass through the
EventRouter, so they share the connection's rate limit with chat and every other event.
"""

from __future__ import annotations

from typing import Any

from . import validation
from .events import EventRouter
from .rooms import Dialect, Participant, Roster
from .validation import expect_args
from .zoomclone import current_room

# The reactions the page offers; anything else is refused, so no client can send arbitrary text.
REACTIONS = ("👍", "👏", "❤️", "😂", "😮", "🎉")


class HandQueue:
    """Raised hands per room, first raised first."""

    def __init__(self, roster: Roster) -> None:
        self._roster = roster
        self._raised: dict[str, list[Participant]] = {}

    def raise_hand(self, participant: Participant, room: str) -> None:
        self._prune()
        queue = self._raised.setdefault(room, [])
        if participant not in queue:
            queue.append(participant)

    def lower(self, participant: Participant) -> None:
        """Lower the participant's hand wherever it is raised (leaving, or joining afresh)."""
        for queue in self._raised.values():
            if participant in queue:
                queue.remove(participant)
        self._prune()

    def queue(self, room: str) -> list[str]:
        """The peer ids with a raised hand in ``room``, in order; hands of leavers drop out."""
        self._prune()
        return [p.peer_id for p in self._raised.get(room, [])]

    def _prune(self) -> None:
        """Forget the hands of everyone who left their room (or disconnected), and empty rooms."""
        for room in list(self._raised):
            queue = [p for p in self._raised[room] if self._roster.room_of(p.sid) == room]
            if queue:
                self._raised[room] = queue
            else:
                del self._raised[room]


def register_gesture_events(router: EventRouter, roster: Roster, hands: HandQueue) -> None:
    @router.on("raise_hand")
    async def raise_hand(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 1)
        raised = validation.boolean(validation.mapping(args[0], "hand").get("raised"), "raised")
        room = current_room(roster, participant)
        before = hands.queue(room)
        if raised:
            hands.raise_hand(participant, room)
        else:
            hands.lower(participant)
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

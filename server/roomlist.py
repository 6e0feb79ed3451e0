"""The lobby's room list (``room_change``): sent only to those who read it, coalesced.

The original zoom-clone server emits ``room_change(rooms)`` to every connection on
every join and leave: O(connections x rooms) per join, quadratic as a server fills
up. Only chat-stage clients use it, plus native clients that ask to follow the
list (``list_rooms({follow: true})``). A connection that has not joined anything
yet gets it too, because a chat-stage client in its lobby looks exactly like that.

Changes are coalesced: the first change after a quiet interval is sent at once
(so a chat-stage client hears about its own join as it always did), later ones
within the interval are folded into one list sent when the interval ends, read
at that moment, so the last list anyone receives is always the true state. The
interval is 250 ms, longer when lists are big and followers many (a byte budget).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import socketio

from .rooms import Dialect, Participant, Roster
from .tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# At most one room list per connection per this many seconds.
COALESCE_SECONDS = 0.25
# And no more room-list bytes than this per second over all followers: 1,000 rooms listed
# to 2,000 lobby connections is ~50 MB per list, which would starve everything else.
ROOM_LIST_BYTES_PER_SECOND = 8 * 2**20


def encoded_size(rooms: list[str]) -> int:
    """About how many bytes ``rooms`` takes as JSON (quotes and commas included)."""
    return sum(len(name) for name in rooms) + 3 * len(rooms) + 2


def follows_room_list(participant: Participant) -> bool:
    """Whether ``participant`` gets ``room_change``: its explicit choice, else its dialect."""
    if participant.follows_rooms is not None:
        return participant.follows_rooms
    return participant.dialect in (None, Dialect.CHAT)


RoomFilter = Callable[[Participant, list[str]], list[str]]  # the rooms one reader may see


class RoomListFeed:
    """Sends ``room_change(rooms)`` to the room list's followers, at a bounded rate.

    With ``visible`` (a token server), each follower hears only the rooms its grant
    lets it see: followers are grouped by what they may see, one emit per group.
    """

    def __init__(
        self,
        sio: socketio.AsyncServer,
        roster: Roster,
        interval: float = COALESCE_SECONDS,
        bytes_per_second: float = ROOM_LIST_BYTES_PER_SECOND,
        visible: RoomFilter | None = None,
    ) -> None:
        self._sio = sio
        self._roster = roster
        self._visible = visible
        self._interval = interval
        self._bytes_per_second = bytes_per_second
        self._next_allowed = 0.0  # monotonic time before which no list is sent
        self._pending: asyncio.Task[None] | None = None
        self.lists_sent = 0  # broadcasts, not messages: one per flush

    async def changed(self) -> None:
        """A room appeared, disappeared or changed its head count."""
        if self._pending is not None:
            return  # the scheduled list will be read after this change
        wait = self._next_allowed - time.monotonic()
        if wait <= 0:
            await self._send()
        else:
            self._pending = asyncio.create_task(self._send_later(wait))

    async def _send_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._pending = None  # a change from now on needs another list
        try:
            await self._send()
        except Exception:
            logger.exception("sending the room list failed")

    def _followers(self) -> list[Participant]:
        return [p for p in self._roster if follows_room_list(p)]

    def follower_count(self) -> int:
        return len(self._followers())

    def _audiences(self, followers: list[Participant]) -> dict[tuple[str, ...], list[str]]:
        """Followers' sids grouped by the list each of them may see."""
        rooms = self._roster.public_rooms()
        if self._visible is None:
            return {tuple(rooms): [p.sid for p in followers]}
        audiences: dict[tuple[str, ...], list[str]] = {}
        for participant in followers:
            visible = tuple(self._visible(participant, rooms))
            audiences.setdefault(visible, []).append(participant.sid)
        return audiences

    async def _send(self) -> None:
        now = time.monotonic()
        self._next_allowed = now + self._interval
        followers = self._followers()
        if not followers:
            return
        audiences = self._audiences(followers)
        volume = sum(encoded_size(list(rooms)) * len(sids) for rooms, sids in audiences.items())
        self._next_allowed = now + max(self._interval, volume / self._bytes_per_second)
        self.lists_sent += 1
        for rooms, sids in audiences.items():
            await self._sio.emit("room_change", list(rooms), to=sids)

    async def close(self) -> None:
        """Drop a scheduled list (shutdown)."""
        await cancel_and_wait(self._pending)
        self._pending = None

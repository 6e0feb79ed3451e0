"""Server-wide caps on rooms and participants, and a chat rate for each room.

Each connection already has its own event rate limit; these bound what many
connections can do together: create rooms without end, fill the server, or flood
one room's chat from many connections at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .ratelimit import TokenBucket
from .validation import ProtocolError


class RoomLimits:
    """``max_rooms`` and ``max_participants`` (0: no cap), and each room's chat budget."""

    def __init__(
        self, max_rooms: int, max_participants: int, chat_rate: float, chat_burst: int
    ) -> None:
        self.max_rooms = max_rooms
        self.max_participants = max_participants
        self._chat_rate, self._chat_burst = chat_rate, chat_burst
        self._chat: dict[str, TokenBucket] = {}
        self.chat_refused = 0

    def check_entry(self, room_sizes: Callable[[], Mapping[str, int]], room: str) -> None:
        """Raise unless one more participant may enter ``room`` (``room_sizes``: name → count)."""
        if not (self.max_rooms or self.max_participants):
            return
        sizes = room_sizes()
        if self.max_rooms and room not in sizes and len(sizes) >= self.max_rooms:
            raise ProtocolError(
                "too_many_rooms", f"the server has its maximum of {self.max_rooms} rooms"
            )
        if self.max_participants and sum(sizes.values()) >= self.max_participants:
            raise ProtocolError(
                "server_full", f"the server has its maximum of {self.max_participants} participants"
            )

    def take_chat(self, room: str) -> None:
        """Count one chat message in ``room``, or raise when the room's chat is too busy."""
        bucket = self._chat.get(room)
        if bucket is None:
            bucket = self._chat[room] = TokenBucket(self._chat_rate, self._chat_burst)
        if not bucket.try_take():
            self.chat_refused += 1
            raise ProtocolError("rate_limited", "this room's chat is too busy; wait a moment")

    def forget(self, room: str) -> None:
        """The room emptied."""
        self._chat.pop(room, None)

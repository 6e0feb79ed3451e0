"""Joining and leaving rooms, and telling each kind of client about it in its own words.

Chat-stage clients hear ``welcome(nickname, count)`` and ``bye(nickname, count)``,
native and /ws clients ``user_joined`` / ``user_left``, and the room list's followers
hear ``room_change(rooms)`` (see roomlist.py). Video-stage signalling (``welcome``
with no arguments) belongs to the media backend, which knows whether browsers
negotiate with each other (p2p) or with the server (relay).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import socketio

from .access import AccessControl
from .backends import MediaBackend
from .resumption import Resumptions
from .roomlist import RoomListFeed
from .rooms import Dialect, Participant, Roster
from .validation import ProtocolError

logger = logging.getLogger(__name__)


def ws_presence(participant: Participant, count: int) -> dict[str, object]:
    """``user_joined`` / ``user_left`` as /ws clients know them (see ws_dialect.py)."""
    return {"peer_id": participant.peer_id, "nickname": participant.nickname, "peer_count": count}


class MembershipObserver(Protocol):
    """Hears of every join and leave (webhooks); must not block."""

    def participant_joined(self, participant: Participant, room: str, *, first: bool) -> None: ...

    def participant_left(
        self, participant: Participant, room: str, reason: str, *, last: bool
    ) -> None: ...


class Membership:
    """Moves participants in and out of rooms and broadcasts the consequences."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        roster: Roster,
        media: MediaBackend,
        overloaded: Callable[[], bool] = lambda: False,
        access: AccessControl | None = None,
        observer: MembershipObserver | None = None,
        resume_grace: float = 0.0,
    ) -> None:
        self._roster = roster
        self._media = media
        self._overloaded = overloaded  # new joins wait while the server cannot keep up
        self._access = access
        self._observer = observer
        visible = (
            (lambda participant, rooms: access.visible_rooms(participant.grant, rooms))
            if access is not None and access.token_required
            else None
        )
        self.room_list = RoomListFeed(sio, roster, visible=visible)
        self.resumptions = Resumptions(
            roster, resume_grace, lambda participant: self.leave(participant, reason="disconnect")
        )

    async def join(self, participant: Participant, room: str, dialect: Dialect) -> bool:
        """Enter ``room``; returns False when the participant was already in it.

        A connection is in at most one room: joining another one leaves the
        previous room first, with the usual goodbyes.
        """
        if self._access is not None:
            self._access.check_join(participant.grant, room)
        current = self._roster.room_of(participant.sid)
        if current == room:
            participant.dialect = dialect
            return False
        if self._overloaded():
            raise ProtocolError(
                "server_busy", "the server is overloaded right now; try again in a few seconds"
            )
        if current is not None:
            self._roster.check_can_enter(room)  # before giving up the old room
            await self.leave(participant, reason="moved")
        participant.dialect = dialect
        await self._roster.enter(participant, room)
        if self._observer is not None:
            self._observer.participant_joined(
                participant, room, first=self._roster.count(room) == 1
            )
        logger.info(
            "%s (%s, %s) joined %r",
            participant.peer_id,
            participant.nickname,
            dialect.value,
            room,
        )
        return True

    async def announce_join(self, participant: Participant, room: str) -> None:
        """Tell the room (and the lobby) that ``participant`` arrived; hidden ones quietly."""
        count = len(self._roster.visible_members(room))
        if participant.grant.hidden:
            await self._media.on_join(participant, room)
            await self.broadcast_room_list()
            return
        await self._roster.emit_to_dialect(
            room, Dialect.CHAT, "welcome", (participant.nickname, count), skip=participant.sid
        )
        await self._roster.emit_to_dialect(
            room,
            Dialect.NATIVE,
            "user_joined",
            {**participant.describe(), "count": count},
            skip=participant.sid,
        )
        await self._roster.emit_to_dialect(
            room, Dialect.WS, "user_joined", ws_presence(participant, count), skip=participant.sid
        )
        await self._media.on_join(participant, room)
        await self.broadcast_room_list()

    async def leave(self, participant: Participant, *, reason: str) -> str | None:
        """Leave the current room, if any, and tell whoever remains."""
        room = participant.room  # also for one whose connection is gone (resumption.py)
        if room is None:
            return None
        await self._media.on_leave(participant, room)
        await self._roster.leave(participant, room)
        count = self._roster.count(room)
        logger.info("%s left %r (%s), %d remain", participant.peer_id, room, reason, count)
        if not count and self._access is not None:
            self._access.room_emptied(room)
        if self._observer is not None:
            self._observer.participant_left(participant, room, reason, last=not count)
        await self.announce_leave(participant, room, reason)
        await self.broadcast_room_list()
        return room

    async def announce_leave(
        self, participant: Participant, room: str, reason: str, *, local: bool = False
    ) -> None:
        """Tell whoever remains in ``room`` (only this node's members, with ``local``:
        each node of a cluster tells its own when another node is gone)."""
        count = len(self._roster.visible_members(room))
        if not count or participant.grant.hidden:
            return
        await self._roster.emit_to_dialect(
            room, Dialect.CHAT, "bye", (participant.nickname, count), local=local
        )
        await self._roster.emit_to_dialect(
            room,
            Dialect.NATIVE,
            "user_left",
            {
                "peer_id": participant.peer_id,
                "nickname": participant.nickname,
                "count": count,
                "reason": reason,
            },
            local=local,
        )
        await self._roster.emit_to_dialect(
            room, Dialect.WS, "user_left", ws_presence(participant, count), local=local
        )

    async def close(self) -> None:
        """Server shutdown: no more room lists, held places end."""
        await self.room_list.close()
        await self.resumptions.close()

    async def broadcast_room_list(self) -> None:
        """``room_change(rooms)`` to the connections that follow the room list.

        On a token server each of them hears only the rooms it may see.
        """
        await self.room_list.changed()

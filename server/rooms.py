"""Participants and rooms, on top of Socket.IO's own rooms.

Room membership lives only in python-socketio's manager (``enter_room`` /
``leave_room``); this module keeps per-connection metadata beside it
(nickname, client dialect, media state) and asks the manager about rooms
through its public API only (``get_participants``), so that a pub/sub manager
(Redis) can replace the in-memory one. Each participant also remembers the one
room it is in: the manager's ``get_rooms`` scans every room, too slow to run on
every event.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import socketio

from .grants import OPEN_GRANT, Grant
from .ratelimit import TokenBucket
from .room_limits import RoomLimits
from .validation import ProtocolError

NAMESPACE = "/"
DEFAULT_NICKNAME = "Anon"


class Dialect(enum.Enum):
    """Which family of client a connection belongs to; decides which events it receives."""

    CHAT = "chat"  # zoom-clone chat stage: enter_room / new_message / bye
    VIDEO = "video"  # zoom-clone video stage: join_room(name) / offer / answer / ice
    NATIVE = "native"  # roomrelay's own protocol: join_room({room, nickname})
    WS = "ws"  # the FastAPI relay's raw WebSocket clients at /ws (ws_dialect.py)
    HTTP = "http"  # WHIP publishers and WHEP viewers (whip.py)


class OtherNodes(Protocol):
    """A cluster's participants on other nodes (cluster/members.py)."""

    def members(self, room: str) -> list[Participant]: ...

    def rooms(self) -> set[str]: ...

    async def local_changed(self, room: str) -> None:
        """This node's members of ``room`` changed: tell the other nodes (before the
        room hears of it, so that they know whom it concerns)."""

    async def deliver_outside(
        self, room: str, dialect: Dialect, event: str, data: Any, skip: str | None
    ) -> None:
        """Have the other nodes deliver an event to their members outside Socket.IO."""

    async def room_action(self, room: str, action: dict[str, Any]) -> None:
        """Have the other nodes carry out a host's action on ``room`` (end, lock)."""

    def by_peer_id(self, peer_id: str) -> Participant | None:
        """Another node's participant."""

    async def moderate(self, participant: Participant, action: dict[str, Any]) -> None:
        """Have ``participant``'s node carry out a host's action on it."""


class Outbox(Protocol):
    """How events reach a participant that is not a Socket.IO connection (/ws, WHIP...)."""

    async def deliver(self, event: str, data: Any) -> None: ...


@dataclass
class Participant:
    """What the server knows about one Socket.IO connection besides its rooms."""

    sid: str
    limiter: TokenBucket
    candidate_limiter: TokenBucket | None = None  # trickled ICE candidates (zoomclone.py)
    peer_id: str = field(default_factory=lambda: secrets.token_hex(6))
    nickname: str = DEFAULT_NICKNAME
    dialect: Dialect | None = None
    audio_enabled: bool = True
    video_enabled: bool = True
    room: str | None = None  # mirrors the manager, so that room_of() is not O(rooms)
    follows_rooms: bool | None = None  # explicit list_rooms({follow}); None: by dialect
    grant: Grant = OPEN_GRANT  # what its access token (or an open server) allows
    muted_by_host: set[str] = field(default_factory=set)  # kinds a host stopped forwarding
    outbox: Outbox | None = None  # set when the connection is not Socket.IO's
    resume_token: str | None = None  # lets a new connection take this place (resumption.py)
    away: bool = False  # its connection dropped; held for a resume until the grace ends
    entered_at: float = 0.0  # when it entered its room (Unix time): a cluster's room order
    hand_raised_at: float | None = None  # when it raised its hand (Unix time); None: lowered

    def describe(self) -> dict[str, object]:
        """The public view of a participant, as other clients see it."""
        return {
            "peer_id": self.peer_id,
            "nickname": self.nickname,
            "audio": self.audio_enabled,
            "video": self.video_enabled,
        }


class Roster:
    """Participants by connection and by peer id, and views of the manager's rooms."""

    def __init__(
        self, sio: socketio.AsyncServer, max_per_room: int, limits: RoomLimits | None = None
    ) -> None:
        self._sio = sio
        self._max_per_room = max_per_room
        self.limits = limits or RoomLimits(0, 0, chat_rate=50.0, chat_burst=100)
        self._by_sid: dict[str, Participant] = {}
        self._by_peer_id: dict[str, Participant] = {}
        # Members that are not Socket.IO connections, by room: the manager cannot hold them.
        self._outside: dict[str, set[str]] = {}
        # Participants whose connection dropped, still in their room for a while: the
        # manager forgot their old sid, so they are counted from here (resumption.py).
        self._away: dict[str, Participant] = {}
        # This node's participants per room, kept by enter/leave: the abuse limits read it on
        # every join, and counting the rooms each time made filling a server quadratic.
        self._sizes: dict[str, int] = {}
        # With REDIS_URL: the other nodes' participants, added to this node's own.
        self.others: OtherNodes | None = None

    # -- connections -------------------------------------------------------

    def add(self, participant: Participant) -> None:
        self._by_sid[participant.sid] = participant
        self._by_peer_id[participant.peer_id] = participant

    def discard(self, sid: str) -> Participant | None:
        participant = self._by_sid.pop(sid, None)
        if participant is not None:
            self._by_peer_id.pop(participant.peer_id, None)
        return participant

    def hold(self, participant: Participant) -> None:
        """Its connection is gone but its place is kept: by peer id only, still a member."""
        self._by_sid.pop(participant.sid, None)
        participant.away = True
        self._away[participant.peer_id] = participant

    def release(self, participant: Participant) -> None:
        """The hold ended without a resume: forget the participant."""
        if self._away.pop(participant.peer_id, None) is not None:
            self._by_peer_id.pop(participant.peer_id, None)

    async def rebind(self, participant: Participant, replacing: Participant) -> None:
        """A held participant takes over ``replacing``'s new connection (and its room)."""
        self.discard(replacing.sid)
        self._away.pop(participant.peer_id, None)
        participant.sid, participant.away = replacing.sid, False
        self.add(participant)
        if participant.room is not None:
            await self._sio.enter_room(participant.sid, participant.room)
            await self._changed(participant.room)

    def is_local(self, participant: Participant) -> bool:
        """Whether ``participant`` is this node's (not another cluster node's)."""
        return self._by_peer_id.get(participant.peer_id) is participant

    def get(self, sid: str) -> Participant | None:
        return self._by_sid.get(sid)

    def by_peer_id(self, peer_id: str) -> Participant | None:
        return self._by_peer_id.get(peer_id)

    def __len__(self) -> int:
        return len(self._by_sid)

    def __iter__(self) -> Iterator[Participant]:
        return iter(list(self._by_sid.values()))

    # -- rooms (membership from the Socket.IO manager) ------------------------

    def room_of(self, sid: str) -> str | None:
        """The public room a connection is in (each connection joins at most one).

        Read from the participant: the manager's ``get_rooms`` scans every room.
        """
        participant = self._by_sid.get(sid)
        return participant.room if participant else None

    def public_rooms(self) -> list[str]:
        """Names of the rooms people are in (on any node of a cluster)."""
        if self.others is None:
            return self.local_rooms()
        return sorted({*self.local_rooms(), *self.others.rooms()})

    def local_rooms(self) -> list[str]:
        """Names of the rooms this node's participants are in."""
        people = [*self._by_sid.values(), *self._away.values()]
        return sorted({p.room for p in people if p.room is not None})

    def member_sids(self, room: str) -> list[str]:
        """The room's live connections: the manager's, then those that are not Socket.IO's."""
        sids = [sid for sid, _ in self._sio.manager.get_participants(NAMESPACE, room)]
        return sids + sorted(self._outside.get(room, ()))

    def members(self, room: str) -> list[Participant]:
        """Everyone in ``room``: this node's participants, then other nodes'."""
        if self.others is None:
            return self.local_members(room)
        # In the order they entered, as on a single node (the first one may be the host).
        everyone = self.local_members(room) + self.others.members(room)
        return sorted(everyone, key=lambda p: p.entered_at)

    def local_members(self, room: str) -> list[Participant]:
        live = [p for sid in self.member_sids(room) if (p := self._by_sid.get(sid))]
        return live + [p for p in self._away.values() if p.room == room]

    def visible_members(self, room: str) -> list[Participant]:
        """Members others may know about: all but hidden ones (recorders, bots)."""
        return [p for p in self.members(room) if not p.grant.hidden]

    def count(self, room: str) -> int:
        remote = len(self.others.members(room)) if self.others is not None else 0
        return self.local_count(room) + remote

    def local_count(self, room: str) -> int:
        away = sum(1 for p in self._away.values() if p.room == room) if self._away else 0
        return len(self.member_sids(room)) + away

    def check_can_enter(self, room: str) -> None:
        """Raise unless a new participant may enter ``room`` (capacity, reserved names)."""
        if room in self._by_sid:  # every connection's own room is named after its sid
            raise ProtocolError("invalid_room_name", "that room name is reserved")
        if self.count(room) >= self._max_per_room:
            raise ProtocolError(
                "room_full", f"room {room!r} is full ({self._max_per_room} participants)"
            )
        self.limits.check_entry(self.room_sizes, room)

    def room_sizes(self) -> Mapping[str, int]:
        """Participants per room, on every node (rooms are listed while someone is in them)."""
        if self.others is None:
            return self._sizes
        sizes = dict(self._sizes)
        for name in self.others.rooms():
            sizes[name] = sizes.get(name, 0) + len(self.others.members(name))
        return sizes

    async def enter(self, participant: Participant, room: str) -> None:
        """Put a connection into ``room``; the caller has made sure it is in no other."""
        self.check_can_enter(room)
        await self._place(participant, room, time.time())

    async def take_place(
        self, participant: Participant, room: str, peer_id: str, entered_at: float
    ) -> None:
        """A participant held on another cluster node resumed here: ``participant``'s
        connection takes its ``peer_id`` and its place in ``room`` (its order kept, and no
        capacity check: the place was counted all along)."""
        self._by_peer_id.pop(participant.peer_id, None)
        participant.peer_id = peer_id
        self._by_peer_id[peer_id] = participant
        await self._place(participant, room, entered_at)

    async def give_up(self, participant: Participant) -> None:
        """A held participant resumed on another cluster node: no longer this node's."""
        room = participant.room
        self.release(participant)
        if room is not None:
            await self.leave(participant, room)

    async def _place(self, participant: Participant, room: str, entered_at: float) -> None:
        if participant.outbox is not None:
            self._outside.setdefault(room, set()).add(participant.sid)
        else:
            await self._sio.enter_room(participant.sid, room)
        participant.room = room
        participant.entered_at = entered_at
        self._sizes[room] = self._sizes.get(room, 0) + 1
        await self._changed(room)

    async def leave(self, participant: Participant, room: str) -> None:
        if participant.outbox is not None:
            outside = self._outside.get(room, set())
            outside.discard(participant.sid)
            if not outside:
                self._outside.pop(room, None)
        elif not participant.away:  # the manager dropped an away connection's rooms already
            await self._sio.leave_room(participant.sid, room)
        participant.room = None
        participant.muted_by_host.clear()
        participant.hand_raised_at = None  # a hand belongs to one stay in one room
        if self._sizes.get(room, 0) > 1:
            self._sizes[room] -= 1
        else:
            self._sizes.pop(room, None)
        await self._changed(room)
        if not self.count(room):
            self.limits.forget(room)

    async def state_changed(self, participant: Participant) -> None:
        """A member's state changed (media, hand): other cluster nodes' views of its room
        learn it now rather than with the next heartbeat."""
        if participant.room is not None:
            await self._changed(participant.room)

    async def _changed(self, room: str) -> None:
        if self.others is not None:
            await self.others.local_changed(room)

    async def send(self, participant: Participant, event: str, data: Any = None) -> None:
        """One event to one participant, over Socket.IO or its outbox (/ws, HTTP sessions)."""
        if participant.outbox is not None:
            await participant.outbox.deliver(event, data)
        else:
            await self._sio.emit(event, data, to=participant.sid)

    async def emit_to_dialect(
        self,
        room: str,
        dialect: Dialect,
        event: str,
        data: Any = None,
        *,
        skip: str | None = None,
        local: bool = False,
    ) -> None:
        """Emit to the members of ``room`` that speak ``dialect``, except ``skip`` (only to
        this node's members with ``local``).

        ``data`` follows python-socketio: a tuple is several arguments, None none.
        """
        if self.others is None or local:
            await self._emit_here(room, dialect, event, data, skip)
            return
        members = self.members(room)
        for member in members:
            if member.outbox is not None and member.dialect is dialect and member.sid != skip:
                await member.outbox.deliver(event, data)
        await self.others.deliver_outside(room, dialect, event, data, skip)
        skipped = [
            p.sid
            for p in members
            if p.dialect is not dialect or p.sid == skip or p.outbox is not None
        ]
        # Emitted even when every member this node knows of is skipped: a member who just
        # joined on another node may not be in this node's view yet (its update is still
        # on the bus), and it must not miss, say, the welcome that starts its call. Such a
        # member is not filtered by dialect; once known, it is.
        await self._sio.emit(event, data, to=room, skip_sid=skipped)

    async def _emit_here(
        self, room: str, dialect: Dialect, event: str, data: Any, skip: str | None
    ) -> None:
        """:meth:`emit_to_dialect` on this node: its connections only, no Redis.

        Every signalling relay comes through here, so the recipients are picked in one pass
        over the manager's room and handed to the manager without a room lookup of its own.
        """
        for sid in sorted(self._outside.get(room, ())):
            member = self._by_sid.get(sid)
            if member and member.outbox is not None and member.dialect is dialect and sid != skip:
                await member.outbox.deliver(event, data)
        recipients = [
            (sid, eio_sid)
            for sid, eio_sid in self._sio.manager.get_participants(NAMESPACE, room)
            if sid != skip
            and (member := self._by_sid.get(sid)) is not None
            and member.dialect is dialect
        ]
        if recipients:
            await self._sio.manager.send_event(recipients, event, data)

"""Other nodes' participants, mirrored on this node: what the roster adds to its own.

Each node's Socket.IO manager knows only its own connections, so a room's full
membership is this node's participants plus the mirror. Each node publishes the
members of a room whenever they change (on the bus) and its whole list with every
heartbeat (a Redis key with an expiry, so a dead node's participants disappear);
both carry the node's version counter, so an older list never replaces a newer one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..grants import OPEN_GRANT
from ..ratelimit import TokenBucket
from ..rooms import Dialect, Participant, Roster

OUTSIDE = "outside"  # the bus message: deliver an event to members outside Socket.IO
ROOM_ACTION = "room_action"  # the bus message: a host ended or locked a room
MODERATE = "moderate"  # the bus message: a host's action on one of your participants

MemberRecord = dict[str, Any]
RoomRecords = dict[str, list[MemberRecord]]


@dataclass
class RemoteParticipant(Participant):
    """A participant connected to another node (read-only here)."""

    node: str = ""
    outside: bool = False  # not a Socket.IO connection (/ws, WHIP): its node delivers


def record(participant: Participant) -> MemberRecord:
    """What other nodes need to know about one of this node's participants."""
    return {
        "sid": participant.sid,
        "peer_id": participant.peer_id,
        "nickname": participant.nickname,
        "dialect": participant.dialect.value if participant.dialect else None,
        "audio": participant.audio_enabled,
        "video": participant.video_enabled,
        "hidden": participant.grant.hidden,
        "identity": participant.grant.identity,
        "outside": participant.outbox is not None,
        "entered_at": participant.entered_at,
        "hand": participant.hand_raised_at,
    }


def raised_at(value: Any) -> float | None:
    """A record's ``hand``: when the participant raised it, or None (also for junk)."""
    return float(value) if isinstance(value, int | float) else None


def local_records(roster: Roster) -> RoomRecords:
    """This node's participants, by room."""
    return {room: [record(p) for p in roster.local_members(room)] for room in roster.local_rooms()}


def _participant(node: str, room: str, data: MemberRecord) -> RemoteParticipant:
    dialect = data.get("dialect")
    return RemoteParticipant(
        sid=str(data["sid"]),
        limiter=TokenBucket(0.0, 0),  # never used: its events arrive at its own node
        peer_id=str(data["peer_id"]),
        nickname=str(data.get("nickname", "")),
        dialect=Dialect(dialect) if dialect else None,
        audio_enabled=bool(data.get("audio", True)),
        video_enabled=bool(data.get("video", True)),
        room=room,
        grant=dataclasses.replace(
            OPEN_GRANT, hidden=bool(data.get("hidden")), identity=data.get("identity")
        ),
        node=node,
        outside=bool(data.get("outside")),
        entered_at=float(data.get("entered_at", 0.0)),
        hand_raised_at=raised_at(data.get("hand")),
    )


@dataclass
class _NodeMembers:
    version: int
    rooms: dict[str, list[RemoteParticipant]]


class MemberMirror:
    """Other nodes' participants by node and room (the roster's ``OtherNodes``)."""

    def __init__(
        self,
        node_id: str,
        local_changed: Callable[[str], Awaitable[None]],
        send: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.node_id = node_id
        self._send = send
        self._nodes: dict[str, _NodeMembers] = {}
        self._local_changed = local_changed
        self.on_change: Callable[[], None] = lambda: None  # the room list may have changed

    # -- the roster's view ---------------------------------------------------------------

    def members(self, room: str) -> list[Participant]:
        return [p for node in self._nodes.values() for p in node.rooms.get(room, ())]

    def rooms(self) -> set[str]:
        return {room for node in self._nodes.values() for room, ps in node.rooms.items() if ps}

    async def local_changed(self, room: str) -> None:
        await self._local_changed(room)

    async def deliver_outside(
        self, room: str, dialect: Dialect, event: str, data: Any, skip: str | None
    ) -> None:
        """Ask the nodes of ``room``'s members outside Socket.IO to deliver the event."""
        nodes = {
            node
            for node, known in self._nodes.items()
            for p in known.rooms.get(room, ())
            if p.outside and p.dialect is dialect and p.sid != skip
        }
        payload = list(data) if isinstance(data, tuple) else data
        for node in sorted(nodes):
            self._send(
                node,
                {
                    "kind": OUTSIDE,
                    "room": room,
                    "dialect": dialect.value,
                    "event": event,
                    "data": payload,
                    "several": isinstance(data, tuple),
                    "skip": skip,
                },
            )

    async def room_action(self, room: str, action: dict[str, Any]) -> None:
        for node in sorted(self._nodes):
            self._send(node, {**action, "kind": ROOM_ACTION, "room": room})

    async def moderate(self, participant: Participant, action: dict[str, Any]) -> None:
        node = participant.node if isinstance(participant, RemoteParticipant) else None
        if node is not None:
            self._send(node, {**action, "kind": MODERATE, "peer_id": participant.peer_id})

    def by_peer_id(self, peer_id: str) -> RemoteParticipant | None:
        for node in self._nodes.values():
            for participants in node.rooms.values():
                for participant in participants:
                    if participant.peer_id == peer_id:
                        return participant
        return None

    def forget_versions(self) -> None:
        """Updates may have been lost (Redis went away): fetch every node's whole list."""
        for known in self._nodes.values():
            known.version = -1

    def version_of(self, node: str) -> int:
        """The version of ``node``'s members known here (-1: none yet)."""
        known = self._nodes.get(node)
        return known.version if known is not None else -1

    def count(self) -> int:
        return sum(len(ps) for node in self._nodes.values() for ps in node.rooms.values())

    # -- updates from other nodes ---------------------------------------------------------

    def apply_room(self, node: str, version: int, room: str, records: list[MemberRecord]) -> None:
        """One room's members on ``node``, as of ``version``."""
        if node == self.node_id:
            return
        known = self._nodes.setdefault(node, _NodeMembers(-1, {}))
        if version <= known.version:
            return
        if version == known.version + 1:
            known.version = version
        # else an update was missed: the version stays behind, so that the next heartbeat
        # fetches the node's whole list
        if records:
            known.rooms[room] = [_participant(node, room, r) for r in records]
        else:
            known.rooms.pop(room, None)
        self.on_change()

    def apply_all(self, node: str, version: int, rooms: RoomRecords) -> None:
        """Everything ``node`` reported with its heartbeat."""
        if node == self.node_id:
            return
        known = self._nodes.get(node)
        if known is not None and version < known.version:
            return
        before = self._summary(known)
        self._nodes[node] = _NodeMembers(
            version,
            {
                room: [_participant(node, room, r) for r in records]
                for room, records in rooms.items()
                if records
            },
        )
        if self._summary(self._nodes[node]) != before:
            self.on_change()

    def keep_only(self, nodes: Iterable[str]) -> list[RemoteParticipant]:
        """Forget the nodes not in ``nodes`` (gone); returns the participants they had."""
        alive = set(nodes)
        gone: list[RemoteParticipant] = []
        for node in [n for n in self._nodes if n not in alive]:
            gone.extend(p for ps in self._nodes.pop(node).rooms.values() for p in ps)
        if gone:
            self.on_change()
        return gone

    @staticmethod
    def _summary(known: _NodeMembers | None) -> dict[str, list[tuple[str, str, bool, bool]]]:
        if known is None:
            return {}
        return {
            room: [(p.peer_id, p.nickname, p.audio_enabled, p.video_enabled) for p in ps]
            for room, ps in known.rooms.items()
        }

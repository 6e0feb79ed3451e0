"""Hosts keep order in their rooms: mute someone, remove someone, lock the room, end it.

A moderator is a participant whose token has ``roomAdmin`` for the room, or, when
the operator enables ``--first-is-host``, the room's earliest participant still
present (the role passes on when they leave). The admin HTTP API
(``admin_api.py``) performs the same actions with an admin token.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio

from . import validation
from .access import AccessControl
from .backends import MediaBackend
from .events import EventRouter
from .media.types import KINDS, Kind
from .membership import Membership
from .rooms import Dialect, Participant, Roster
from .stats import Stats
from .validation import ProtocolError, expect_args
from .zoomclone import current_room

logger = logging.getLogger(__name__)

ADMIN = "admin"  # who acted, when it was the HTTP API


def media_kind(value: Any) -> Kind:
    if value not in KINDS:
        raise validation.bad_request("kind must be 'audio' or 'video'")
    return value


class Moderation:
    """The moderation actions, shared by hosts' Socket.IO events and the admin HTTP API."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        roster: Roster,
        membership: Membership,
        media: MediaBackend,
        access: AccessControl,
        stats: Stats,
        *,
        first_is_host: bool,
    ) -> None:
        self._sio = sio
        self._stats = stats
        self._roster = roster
        self._membership = membership
        self._media = media
        self._access = access
        self._first_is_host = first_is_host

    def is_moderator(self, participant: Participant, room: str) -> bool:
        if self._access.is_admin(participant.grant, room):
            return True
        if not self._first_is_host:
            return False
        members = self._roster.visible_members(room)
        return bool(members) and members[0] is participant

    def target(self, room: str, peer_id: Any) -> Participant:
        """The participant ``peer_id`` of ``room``, or ProtocolError."""
        if not isinstance(peer_id, str):
            raise validation.bad_request("peer_id must be a string")
        participant = self._roster.by_peer_id(peer_id)
        if participant is None and self._roster.others is not None:
            participant = self._roster.others.by_peer_id(peer_id)  # on another node
        if participant is None or participant.room != room:
            raise ProtocolError("not_in_room", f"no participant {peer_id[:32]!r} in room {room!r}")
        return participant

    async def mute(self, room: str, target: Participant, kind: Kind, muted: bool, by: str) -> None:
        """Stop (or resume) forwarding ``target``'s ``kind``; tell it and the room."""
        if self._roster.others is not None and not self._roster.is_local(target):
            action = {"action": "mute", "room": room, "media": kind, "muted": muted, "by": by}
            await self._roster.others.moderate(target, action)
            return
        await self._media.set_muted(target, room, kind, muted)
        if muted:
            target.muted_by_host.add(kind)
        else:
            target.muted_by_host.discard(kind)
        if kind == "audio":
            target.audio_enabled = not muted and target.audio_enabled
        else:
            target.video_enabled = not muted and target.video_enabled
        logger.info(
            "%s %s %s of %s in %r", by, "muted" if muted else "unmuted", kind, target.peer_id, room
        )
        self._stats.count_moderation(f"{'mute' if muted else 'unmute'}_{kind}")
        await self._roster.send(target, "muted", {"kind": kind, "muted": muted, "by": by})
        await self._roster.emit_to_dialect(
            room,
            Dialect.NATIVE,
            "media_state",
            {
                "peer_id": target.peer_id,
                "audio": target.audio_enabled,
                "video": target.video_enabled,
            },
            skip=target.sid,
        )

    def lock_here(self, room: str, locked: bool) -> None:
        """A host on another node locked (or unlocked) ``room``: joins through this one too."""
        self._access.set_locked(room, locked)

    async def end_here(self, room: str) -> None:
        """A host on another node ended ``room``: its members on this node leave."""
        for member in self._roster.local_members(room):
            await self._membership.leave(member, reason="room_ended")
        self._access.set_locked(room, False)

    async def remove(
        self, room: str, target: Participant, by: str, reason: str = "removed"
    ) -> None:
        """Take ``target`` out of the room; it stays connected and may rejoin unless locked."""
        if self._roster.others is not None and not self._roster.is_local(target):
            action = {"action": "remove", "room": room, "by": by, "reason": reason}
            await self._roster.others.moderate(target, action)
            return
        logger.info("%s removed %s from %r (%s)", by, target.peer_id, room, reason)
        self._stats.count_moderation("remove")
        await self._roster.send(target, "removed", {"room": room, "by": by, "reason": reason})
        await self._membership.leave(target, reason=reason)

    async def lock(self, room: str, locked: bool, by: str) -> None:
        """A locked room admits no one but its admins until unlocked (or emptied)."""
        self._access.set_locked(room, locked)
        if self._roster.others is not None:  # joins through the other nodes too
            await self._roster.others.room_action(room, {"action": "lock", "locked": locked})
        logger.info("%s %s %r", by, "locked" if locked else "unlocked", room)
        self._stats.count_moderation("lock" if locked else "unlock")
        await self._sio.emit("room_locked", {"room": room, "locked": locked, "by": by}, to=room)

    async def end(self, room: str, by: str) -> int:
        """Remove everyone; returns how many were in the room."""
        count = self._roster.count(room)
        await self._sio.emit("room_ended", {"room": room, "by": by}, to=room)
        # This node's members: in a cluster, other nodes' members are theirs to remove.
        await self.end_here(room)
        if self._roster.others is not None:
            await self._roster.others.room_action(room, {"action": "end"})
        logger.info("%s ended %r (%d participants)", by, room, count)
        self._stats.count_moderation("end")
        return count


def register_moderation_events(router: EventRouter, roster: Roster, moderation: Moderation) -> None:
    """``mute_participant``, ``remove_participant``, ``lock_room``, ``end_room`` for hosts."""

    def moderated_room(participant: Participant) -> str:
        room = current_room(roster, participant)
        if not moderation.is_moderator(participant, room):
            raise ProtocolError("forbidden", "only a host of this room may do that")
        return room

    def targeted(
        participant: Participant, args: tuple[Any, ...]
    ) -> tuple[dict[str, Any], str, Participant]:
        """(request, room, target) of a ``{peer_id, ...}`` request by a host."""
        expect_args(args, 1)
        request = validation.mapping(args[0], "request")
        room = moderated_room(participant)
        return request, room, moderation.target(room, request.get("peer_id"))

    @router.on("mute_participant")
    async def mute_participant(participant: Participant, *args: Any) -> dict[str, Any]:
        request, room, target = targeted(participant, args)
        kind = media_kind(request.get("kind"))
        muted = validation.boolean(request.get("muted", True), "muted")
        await moderation.mute(room, target, kind, muted, participant.nickname)
        return {"ok": True}

    @router.on("remove_participant")
    async def remove_participant(participant: Participant, *args: Any) -> dict[str, Any]:
        _, room, target = targeted(participant, args)
        if target is participant:
            raise validation.bad_request("use leave_room to leave")
        await moderation.remove(room, target, participant.nickname)
        return {"ok": True}

    @router.on("lock_room")
    async def lock_room(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 0, 1)
        request = validation.mapping(args[0], "lock request") if args else {}
        locked = validation.boolean(request.get("locked", True), "locked")
        await moderation.lock(moderated_room(participant), locked, participant.nickname)
        return {"ok": True, "locked": locked}

    @router.on("end_room")
    async def end_room(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 0)
        room = moderated_room(participant)
        return {"ok": True, "removed": await moderation.end(room, participant.nickname)}

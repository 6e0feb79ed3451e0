"""The zoom-clone dialect: the course app's chat-stage and video-stage events, unchanged.

Argument order follows the original client: the room name is always the last
argument, and acknowledgement callbacks are called with no arguments.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import validation
from .access import rename
from .backends import MediaBackend
from .events import EventRouter
from .membership import Membership
from .rooms import DEFAULT_NICKNAME, Dialect, Participant, Roster
from .validation import ProtocolError, expect_args

OK = {"ok": True}

ObjectJoin = Callable[[Participant, dict[str, Any]], Awaitable[Any]]


def current_room(roster: Roster, participant: Participant, named: Any = None) -> str:
    """The participant's room, checked against the room name a client passed, if any."""
    room = roster.room_of(participant.sid)
    if named is not None and named != room:  # the same name was validated when joining
        named_room = validation.room_name(named)
        if named_room != room:
            raise ProtocolError("not_in_room", f"you are not in room {named_room!r}")
    if room is None:
        raise ProtocolError("not_in_room", "join a room first")
    return room


def take_candidate(participant: Participant) -> None:
    """Count a trickled candidate against the connection's allowance (MAX_TRICKLED_CANDIDATES).

    Each candidate makes the receiving side send connectivity checks to an
    address of the sender's choosing; without a cap one client could make the
    server (or, in p2p mode, the other browsers) reflect traffic anywhere.
    """
    limiter = participant.candidate_limiter
    if limiter is not None and not limiter.try_take():
        raise ProtocolError("invalid_candidate", "too many ICE candidates from this connection")


def require_nickname(participant: Participant, required: bool) -> None:
    """With REQUIRE_NICKNAME, refuse joins from connections that never chose a name."""
    if required and participant.nickname == DEFAULT_NICKNAME:
        raise ProtocolError("nickname_required", "choose a nickname before joining a room")


def chat_line(participant: Participant, text: str) -> dict[str, Any]:
    """A chat message as native clients receive it."""
    return {
        "peer_id": participant.peer_id,
        "nickname": participant.nickname,
        "text": text,
        "ts": time.time(),
    }


async def deliver_chat(roster: Roster, participant: Participant, room: str, text: str) -> dict:
    """Send a chat message to the rest of the room, each dialect in its own form."""
    if not participant.grant.can_publish_data:
        raise ProtocolError("forbidden", "your access token does not allow chat")
    roster.limits.take_chat(room)
    await roster.emit_to_dialect(
        room, Dialect.CHAT, "new_message", f"{participant.nickname}: {text}", skip=participant.sid
    )
    line = chat_line(participant, text)
    await roster.emit_to_dialect(room, Dialect.NATIVE, "chat_message", line, skip=participant.sid)
    return line


def register_zoomclone_events(
    router: EventRouter,
    roster: Roster,
    membership: Membership,
    media: MediaBackend,
    *,
    join_with_object: ObjectJoin | None = None,
    nickname_required: bool = False,
) -> None:
    """Chat stage (``enter_room``, ``nickname``, ``new_message``) and video stage signalling.

    ``join_with_object`` handles ``join_room({...})``, the native protocol's form.
    """

    @router.on("enter_room")
    async def enter_room(participant: Participant, *args: Any) -> None:
        expect_args(args, 1, 2)
        room = validation.room_name(args[0])
        if len(args) == 2:
            rename(participant, args[1], strict=False)
        require_nickname(participant, nickname_required)
        if await membership.join(participant, room, Dialect.CHAT):
            # The original calls done() first, then notifies the room and the lobby.
            router.after_reply(participant, membership.announce_join(participant, room))

    @router.on("nickname")
    async def nickname(participant: Participant, *args: Any) -> dict[str, bool]:
        expect_args(args, 1)
        rename(participant, args[0])
        room = roster.room_of(participant.sid)
        if room is not None:
            await roster.state_changed(participant)
            await roster.emit_to_dialect(
                room,
                Dialect.NATIVE,
                "user_updated",
                participant.describe(),
                skip=participant.sid,
            )
        return OK

    @router.on("new_message")
    async def new_message(participant: Participant, *args: Any) -> None:
        expect_args(args, 2)
        text = validation.chat_text(args[0])
        room = current_room(roster, participant, args[1])
        await deliver_chat(roster, participant, room, text)

    @router.on("join_room")
    async def join_room(participant: Participant, *args: Any) -> Any:
        expect_args(args, 1)
        if isinstance(args[0], dict) and join_with_object is not None:
            return await join_with_object(participant, args[0])
        room = validation.room_name(args[0])
        require_nickname(participant, nickname_required)
        if await membership.join(participant, room, Dialect.VIDEO):
            router.after_reply(participant, membership.announce_join(participant, room))
        return None

    def signalling_args(participant: Participant, args: tuple[Any, ...]) -> tuple[Any, str]:
        """(payload, room) from ``payload, roomName`` (zoom-clone) or ``payload`` (native)."""
        expect_args(args, 1, 2)
        return args[0], current_room(roster, participant, args[1] if len(args) == 2 else None)

    @router.on("offer")
    async def offer(participant: Participant, *args: Any) -> dict[str, bool]:
        payload, room = signalling_args(participant, args)
        await media.on_offer(participant, room, validation.session_description(payload, "offer"))
        return OK

    @router.on("answer")
    async def answer(participant: Participant, *args: Any) -> dict[str, bool]:
        payload, room = signalling_args(participant, args)
        await media.on_answer(participant, room, validation.session_description(payload, "answer"))
        return OK

    @router.on("ice")
    async def ice(participant: Participant, *args: Any) -> dict[str, bool]:
        payload, room = signalling_args(participant, args)
        candidate = validation.ice_candidate(payload)
        if candidate is not None and candidate.candidate.strip():
            take_candidate(participant)
        await media.on_ice(participant, room, candidate)
        return OK

"""roomrelay's own protocol: joins with a nickname, presence, chat, media state, room list.

Media negotiation (``offer`` / ``ice``) shares its events with the zoom-clone
dialect (see zoomclone.py); the full protocol is documented in docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

from . import validation
from .access import AccessControl, rename
from .audio.hub import AudioHub
from .backends import MediaBackend
from .events import EventRouter
from .gestures import HandQueue
from .membership import Membership
from .moderation import Moderation
from .rooms import Dialect, Participant, Roster
from .turn import IceServerList
from .validation import ProtocolError, expect_args
from .zoomclone import ObjectJoin, current_room, deliver_chat, require_nickname


def native_join(
    router: EventRouter,
    roster: Roster,
    membership: Membership,
    media: MediaBackend,
    audio: AudioHub,
    ice_servers: IceServerList,
    hands: HandQueue,
    moderation: Moderation,
    nickname_required: bool = False,
) -> ObjectJoin:
    """``join_room({room, nickname?})``: ack with our peer id and who is already there."""

    async def join(participant: Participant, request: dict[str, Any]) -> dict[str, Any]:
        room = validation.room_name(request.get("room"))
        token = request.get("resume")
        resumed = None
        if token is not None:
            token = validation.resume_token(token)
            if participant.room is None:  # only a fresh connection can take a place back
                resumed = await membership.resumptions.claim(token, room, participant)
        if resumed is not None:
            participant = resumed  # the same peer id, nickname and media as before the drop
            router.after_reply(participant, media.on_resume(participant, room))
        else:
            if request.get("nickname") is not None:
                rename(participant, request["nickname"], strict=False)
            require_nickname(participant, nickname_required)
            if await membership.join(participant, room, Dialect.NATIVE):
                router.after_reply(participant, membership.announce_join(participant, room))
        return {
            "ok": True,
            "resumed": resumed is not None,
            "resume_token": membership.resumptions.issue(participant),
            "peer_id": participant.peer_id,
            "room": room,
            "nickname": participant.nickname,
            "participants": [
                p.describe() for p in roster.visible_members(room) if p is not participant
            ],
            "published": media.published(room),
            "ice_servers": ice_servers.for_client(participant.peer_id),
            "active_speaker": media.active_speaker(room),
            "recording": audio.is_recording(room),
            "captions": audio.has_captions(room),
            "hands": hands.queue(room),
            "permissions": participant.grant.permissions(),
            "host": moderation.is_moderator(participant, room),
        }

    return join


def register_native_events(
    router: EventRouter, roster: Roster, membership: Membership, access: AccessControl
) -> None:
    @router.on("leave_room")
    async def leave_room(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 0)
        room = await membership.leave(participant, reason="left")
        membership.resumptions.forget(participant)
        if room is None:
            raise ProtocolError("not_in_room", "you are not in a room")
        return {"ok": True, "room": room}

    @router.on("chat_message")
    async def chat_message(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 1)
        text = validation.chat_text(validation.mapping(args[0], "message").get("text"))
        room = current_room(roster, participant)
        return {"ok": True, "message": await deliver_chat(roster, participant, room, text)}

    @router.on("media_state")
    async def media_state(participant: Participant, *args: Any) -> dict[str, Any]:
        expect_args(args, 1)
        state = validation.mapping(args[0], "media state")
        if not {"audio", "video"} & state.keys():
            raise validation.bad_request("media state needs 'audio' and/or 'video'")
        audio = validation.boolean(state.get("audio", participant.audio_enabled), "audio")
        video = validation.boolean(state.get("video", participant.video_enabled), "video")
        room = current_room(roster, participant)
        if (audio and "audio" in participant.muted_by_host) or (
            video and "video" in participant.muted_by_host
        ):
            raise ProtocolError("forbidden", "a host muted you; only a host can unmute you")
        participant.audio_enabled, participant.video_enabled = audio, video
        await roster.state_changed(participant)
        await roster.emit_to_dialect(
            room,
            Dialect.NATIVE,
            "media_state",
            {"peer_id": participant.peer_id, "audio": audio, "video": video},
            skip=participant.sid,
        )
        return {"ok": True}

    @router.on("list_rooms")
    async def list_rooms(participant: Participant, *args: Any) -> dict[str, Any]:
        """The rooms with head counts; ``{follow: bool}`` (un)subscribes ``room_change``."""
        expect_args(args, 0, 1)
        options = validation.mapping(args[0], "options") if args else {}
        # Asking for the list without following it says "native client": no room_change.
        participant.follows_rooms = validation.boolean(options.get("follow", False), "follow")
        return {
            "ok": True,
            "rooms": [
                {"name": name, "participants": len(roster.visible_members(name))}
                for name in access.visible_rooms(participant.grant, roster.public_rooms())
            ],
        }

"""What a participant may do, as granted by an access token (or by an open server).

The claims follow LiveKit's access tokens, so that tooling written for them
reads naturally here: ``iss`` is the API key, ``sub`` the identity, ``name`` the
nickname, and the ``video`` claim holds the grant (``room``, ``roomJoin``,
``canPublish``, ``canSubscribe``, ``canPublishData``, ``roomAdmin``, ``roomList``,
``hidden``). As in LiveKit, the three ``can*`` permissions default to true and
everything else to false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANY_ROOM = "*"

# Grant claim name -> (Grant field, default when absent).
GRANT_CLAIMS: dict[str, tuple[str, bool]] = {
    "roomJoin": ("room_join", False),
    "canPublish": ("can_publish", True),
    "canSubscribe": ("can_subscribe", True),
    "canPublishData": ("can_publish_data", True),
    "roomAdmin": ("room_admin", False),
    "roomList": ("room_list", False),
    "hidden": ("hidden", False),
}


class GrantError(ValueError):
    """The token's claims are not a grant we understand."""


@dataclass(frozen=True)
class Grant:
    """Permissions of one connection. ``identity`` is None when no token was given."""

    identity: str | None = None
    name: str | None = None
    room: str | None = None  # None: no room; "*": any room
    room_join: bool = False
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    room_admin: bool = False
    room_list: bool = False
    hidden: bool = False

    def covers(self, room: str) -> bool:
        """Whether the grant's room is ``room`` (or any room)."""
        return self.room in (ANY_ROOM, room)

    @property
    def nickname(self) -> str | None:
        """The name others see, fixed by the token: ``name``, else the identity."""
        return self.name or self.identity

    def permissions(self) -> dict[str, bool]:
        """What the participant may do, as its client is told in the join ack."""
        return {
            "publish": self.can_publish,
            "subscribe": self.can_subscribe,
            "chat": self.can_publish_data,
            "admin": self.room_admin,
        }


# Anyone on an open server (or in an open room): everything but moderation.
OPEN_GRANT = Grant(room=ANY_ROOM, room_join=True, room_list=True)
# A connection without a token on a token server: it may join open rooms only.
NO_GRANT = Grant()


def grant_from_claims(claims: dict[str, Any]) -> Grant:
    """A :class:`Grant` from a verified token's claims; raises GrantError when malformed."""
    identity = claims.get("sub")
    if not isinstance(identity, str) or not identity.strip():
        raise GrantError("the token names no identity ('sub')")
    name = claims.get("name")
    if name is not None and not isinstance(name, str):
        raise GrantError("'name' must be a string")
    video = claims.get("video", {})
    if not isinstance(video, dict):
        raise GrantError("'video' must be an object")
    room = video.get("room")
    if room is not None and (not isinstance(room, str) or not room):
        raise GrantError("'video.room' must be a room name or '*'")
    flags: dict[str, bool] = {}
    for claim, (field_name, default) in GRANT_CLAIMS.items():
        value = video.get(claim, default)
        if not isinstance(value, bool):
            raise GrantError(f"'video.{claim}' must be true or false")
        flags[field_name] = value
    return Grant(identity=identity.strip(), name=name or None, room=room, **flags)


def claims_for(
    *,
    identity: str,
    room: str,
    name: str | None = None,
    admin: bool = False,
    can_publish: bool = True,
    can_subscribe: bool = True,
    can_publish_data: bool = True,
    room_list: bool = False,
    hidden: bool = False,
) -> dict[str, Any]:
    """The claims of a token for ``identity`` in ``room`` (without iss/exp/nbf)."""
    claims: dict[str, Any] = {
        "sub": identity,
        "video": {
            "room": room,
            "roomJoin": True,
            "canPublish": can_publish,
            "canSubscribe": can_subscribe,
            "canPublishData": can_publish_data,
            "roomAdmin": admin,
            "roomList": room_list,
            "hidden": hidden,
        },
    }
    if name:
        claims["name"] = name
    return claims

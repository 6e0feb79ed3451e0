"""The admin HTTP API: list, mute, remove, lock and close, with a ``roomAdmin`` Bearer token.

Every request needs ``Authorization: Bearer <token>`` whose grant has
``roomAdmin`` for the room (``*`` for every room and for the room list), on open
servers too: without API keys the admin API refuses everything.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import validation
from .access import AccessControl, AccessError
from .grants import ANY_ROOM, Grant
from .http_api import http_error as refusal
from .moderation import ADMIN, Moderation, media_kind
from .rooms import Roster
from .stats import Stats

MAX_BODY_BYTES = 4096


class AdminApi:
    """The handlers; each checks the token, then acts through :class:`Moderation`."""

    def __init__(
        self, roster: Roster, access: AccessControl, moderation: Moderation, stats: Stats
    ) -> None:
        self._roster = roster
        self._access = access
        self._moderation = moderation
        self._stats = stats

    def _admin(self, request: web.Request, room: str) -> Grant:
        """The requester's grant if it administers ``room``; 401/403 otherwise."""
        try:
            grant = self._access.verify(bearer_token(request))
        except AccessError as refused:
            self._stats.count_error(refused.code)
            raise refusal(web.HTTPUnauthorized, refused.code, refused.message) from None
        if not self._access.is_admin(grant, room):
            self._stats.count_error("forbidden")
            raise refusal(web.HTTPForbidden, "forbidden", f"no roomAdmin grant for {room!r}")
        return grant

    def _room(self, request: web.Request) -> str:
        try:
            room = validation.room_name(request.match_info["room"])
        except validation.ProtocolError as error:
            raise refusal(web.HTTPBadRequest, error.code, error.message) from None
        self._admin(request, room)
        if not self._roster.count(room):
            raise refusal(web.HTTPNotFound, "not_found", f"no room {room!r}")
        return room

    def _participants(self, room: str) -> list[dict[str, Any]]:
        return [
            {
                **p.describe(),
                "identity": p.grant.identity,
                "hidden": p.grant.hidden,
                "muted_by_host": sorted(p.muted_by_host),
                "dialect": p.dialect.value if p.dialect else None,
            }
            for p in self._roster.members(room)
        ]

    async def list_rooms(self, request: web.Request) -> web.Response:
        self._admin(request, ANY_ROOM)
        return web.json_response(
            {
                "rooms": [
                    {
                        "name": room,
                        "locked": self._access.is_locked(room),
                        "participants": self._participants(room),
                    }
                    for room in self._roster.public_rooms()
                ]
            }
        )

    async def show_room(self, request: web.Request) -> web.Response:
        room = self._room(request)
        return web.json_response(
            {
                "name": room,
                "locked": self._access.is_locked(room),
                "participants": self._participants(room),
            }
        )

    async def remove(self, request: web.Request) -> web.Response:
        room = self._room(request)
        target = self._target(room, request)
        await self._moderation.remove(room, target, ADMIN)
        return web.json_response({"ok": True})

    async def mute(self, request: web.Request) -> web.Response:
        room = self._room(request)
        target = self._target(room, request)
        body = await json_body(request)
        try:
            kind = media_kind(body.get("kind"))
            muted = validation.boolean(body.get("muted", True), "muted")
            await self._moderation.mute(room, target, kind, muted, ADMIN)
        except validation.ProtocolError as error:
            raise refusal(web.HTTPBadRequest, error.code, error.message) from None
        return web.json_response({"ok": True})

    async def lock(self, request: web.Request) -> web.Response:
        room = self._room(request)
        body = await json_body(request)
        try:
            locked = validation.boolean(body.get("locked", True), "locked")
        except validation.ProtocolError as error:
            raise refusal(web.HTTPBadRequest, error.code, error.message) from None
        await self._moderation.lock(room, locked, ADMIN)
        return web.json_response({"ok": True, "locked": locked})

    async def close(self, request: web.Request) -> web.Response:
        room = self._room(request)
        return web.json_response({"ok": True, "removed": await self._moderation.end(room, ADMIN)})

    def _target(self, room: str, request: web.Request) -> Any:
        try:
            return self._moderation.target(room, request.match_info["peer_id"])
        except validation.ProtocolError as error:
            raise refusal(web.HTTPNotFound, error.code, error.message) from None

    def routes(self) -> list[web.RouteDef]:
        base = "/admin/rooms/{room}"
        return [
            web.get("/admin/rooms", self.list_rooms),
            web.get(base, self.show_room),
            web.post(base + "/participants/{peer_id}/remove", self.remove),
            web.post(base + "/participants/{peer_id}/mute", self.mute),
            web.post(base + "/lock", self.lock),
            web.post(base + "/close", self.close),
        ]


def bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise refusal(web.HTTPUnauthorized, "unauthorized", "use 'Authorization: Bearer <token>'")
    return token.strip()


async def json_body(request: web.Request) -> dict[str, Any]:
    """A small JSON object body (empty means ``{}``)."""
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise refusal(web.HTTPRequestEntityTooLarge, "too_large", "the body is over 4 KiB")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise refusal(web.HTTPBadRequest, "bad_request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise refusal(web.HTTPBadRequest, "bad_request", "the body must be a JSON object")
    return body

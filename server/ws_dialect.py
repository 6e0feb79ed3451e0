"""The FastAPI room relay's WebSocket protocol at ``WS /ws``: a third signalling dialect.

Clients of that earlier server connect, are told their ``peer_id``, join a room
and offer once. Since they never renegotiate by themselves, the relay gives
them fixed receive slots that follow the active speaker (like zoom-clone pages):
whoever comes and goes, the slots change source without a new offer. Such a
participant lives in the same Roster and Membership as Socket.IO ones, so it is
counted, listed, recorded and announced to every dialect.

Messages are JSON text objects with a ``type``; payload fields may sit beside it
or under ``data``. Every refusal is an ``error`` message with ``code`` and
``message`` and changes nothing. The full table is in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from . import validation
from .access import AccessError, rename
from .connections import new_participant
from .context import RoomServer
from .events import EventRouter
from .http_security import origin_checker
from .rooms import Dialect, Participant
from .settings import Settings, parse_origins
from .validation import ProtocolError
from .zoomclone import current_room, require_nickname, take_candidate

logger = logging.getLogger(__name__)

# An offer (64 KiB of SDP) plus its JSON framing; larger messages are refused with an error.
MAX_WS_MESSAGE = validation.MAX_SDP_BYTES + 16 * 1024
# Frames beyond this are not even read: aiohttp closes the socket (1009, message too big).
MAX_WS_FRAME = 4 * MAX_WS_MESSAGE
MAX_TYPE_LENGTH = 64
CLOSE_POLICY = 1008  # RFC 6455: the server refuses this client (bad token)
CLOSE_TRY_LATER = 1013  # RFC 6455: the server is full
CLOSE_GOING_AWAY = 1001  # RFC 6455: the server is shutting down

Fields = dict[str, Any]
Handler = Callable[[Participant, Fields], Awaitable[None]]


class WebSocketOutbox:
    """Delivers events to one /ws client as flat JSON messages: ``{"type": event, ...}``."""

    def __init__(self, socket: web.WebSocketResponse) -> None:
        self._socket = socket
        self._lock = asyncio.Lock()  # the SFU's answers and the read loop's replies interleave

    async def deliver(self, event: str, data: Any) -> None:
        message = {**(data if isinstance(data, dict) else {}), "type": event}
        if event == "answer":
            message["sdp_type"] = "answer"  # `type` names the message; see the offer's remark
        await self.send(message)

    async def send(self, message: Fields) -> None:
        async with self._lock:
            if self._socket.closed:
                return
            with contextlib.suppress(ConnectionResetError):
                await self._socket.send_str(json.dumps(message))


def parse_message(text: str) -> tuple[str, Fields]:
    """``(type, fields)`` of one client message; fields beside ``type`` or under ``data``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_WS_MESSAGE:
        raise ProtocolError("too_large", f"messages are limited to {MAX_WS_MESSAGE} bytes")
    try:
        message = json.loads(text)
    except ValueError:
        raise validation.bad_request("messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise validation.bad_request("messages must be JSON objects")
    kind = message.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_LENGTH:
        raise validation.bad_request("a message needs a 'type' string")
    data = message.get("data")
    if data is None:
        return kind, {key: value for key, value in message.items() if key != "type"}
    if not isinstance(data, dict):
        raise validation.bad_request("'data' must be an object")
    return kind, data


def offer_description(fields: Fields) -> dict[str, Any]:
    """The offer's ``{type, sdp}``; the SDP type may be ``sdp_type`` (``type`` names the message).

    ``sdp`` may also be a whole RTCSessionDescriptionInit, as some clients send
    ``pc.localDescription`` as it is.
    """
    sdp = fields.get("sdp")
    if isinstance(sdp, dict):
        return validation.session_description(sdp, "offer")
    # Flat messages lose `type` to the message name; under `data` it is the SDP type.
    sdp_type = fields.get("sdp_type", fields.get("type", "offer"))
    return validation.session_description({"type": sdp_type, "sdp": sdp}, "offer")


def candidate_init(fields: Fields) -> Any:
    """The RTCIceCandidateInit, whether nested under ``candidate`` or flattened beside it."""
    if "candidate" not in fields:
        raise validation.bad_request("ice_candidate needs 'candidate' (an object, or null)")
    candidate = fields["candidate"]
    if isinstance(candidate, str):  # {candidate: "candidate:...", sdpMid, sdpMLineIndex}
        return {k: fields.get(k) for k in ("sdpMid", "sdpMLineIndex", "usernameFragment")} | {
            "candidate": candidate
        }
    return candidate


def origin_allowed(request: web.Request, cors_origins: str) -> bool:
    """The Socket.IO rule for /ws too: the server's own origin, plus CORS_ORIGINS."""
    allowed = parse_origins(cors_origins)
    origin = request.headers.get("Origin")
    if not origin or allowed == "*":
        return True  # not a browser, or any site may connect
    listed = allowed if isinstance(allowed, list) else []
    return origin_checker(listed)(origin, {"HTTP_HOST": request.host})


class WebSocketDialect:
    """Serves ``WS /ws``: one participant per socket, messages handled in arrival order."""

    def __init__(self, settings: Settings, server: RoomServer, router: EventRouter) -> None:
        self._settings = settings
        self._sio = server.sio
        self._roster = server.roster
        self._router = router
        self._membership = server.membership
        self._media = server.media
        self._access = server.access
        self._stats = server.stats
        self._sockets: dict[str, web.WebSocketResponse] = {}  # by session, for admission
        self._handlers: dict[str, Handler] = {
            "join_room": self._join_room,
            "offer": self._offer,
            "ice_candidate": self._ice_candidate,
            "leave_room": self._leave_room,
            "get_rooms": self._get_rooms,
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/ws", self.serve)]

    @property
    def connections(self) -> int:
        return len(self._sockets)

    async def close(self) -> None:
        """Say goodbye to every /ws client (server shutdown)."""
        for socket in list(self._sockets.values()):
            with contextlib.suppress(ConnectionResetError):
                await socket.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request, self._settings.cors_origins):
            self._stats.count_error("forbidden_origin")
            return web.json_response(
                {"error": "forbidden_origin", "message": "this origin may not connect"},
                status=403,
            )
        socket = web.WebSocketResponse(
            max_msg_size=MAX_WS_FRAME, heartbeat=self._settings.ping_interval
        )
        await socket.prepare(request)
        outbox = WebSocketOutbox(socket)
        participant = await self._admit(request, socket, outbox)
        if participant is None:
            return socket
        try:
            await outbox.send({"type": "peer_id", "peer_id": participant.peer_id})
            await self._read(socket, participant)
        finally:
            await self._disconnect(participant)
        return socket

    async def _admit(
        self, request: web.Request, socket: web.WebSocketResponse, outbox: WebSocketOutbox
    ) -> Participant | None:
        """A participant for this socket, or None after telling the client why not."""
        try:
            grant = self._access.connection_grant(None, request.query_string)
        except AccessError as refused:
            self._stats.count_error(refused.code)
            await outbox.send({"type": "error", **refused.payload()})
            await socket.close(code=CLOSE_POLICY, message=refused.code.encode())
            return None
        session = "ws-" + secrets.token_hex(8)
        alive = set(self._sio.eio.sockets) | set(self._sockets)
        refusal = self._sio.admission.admit(session, (request.remote or "?").lower(), alive)
        if refusal is not None:
            self._stats.count_error(refusal.reason)
            await outbox.send({"type": "error", "code": refusal.reason, "message": refusal.message})
            await socket.close(code=CLOSE_TRY_LATER, message=refusal.reason.encode())
            return None
        self._sockets[session] = socket
        participant = new_participant(
            self._settings,
            session,
            grant,
            follows_rooms=False,  # it asks with get_rooms
            outbox=outbox,
        )
        self._roster.add(participant)
        self._stats.connections_total += 1
        logger.debug("/ws connection %s as peer %s", session, participant.peer_id)
        return participant

    async def _read(self, socket: web.WebSocketResponse, participant: Participant) -> None:
        flooding = False
        async for message in socket:
            if message.type is not WSMsgType.TEXT:
                if message.type is WSMsgType.BINARY:
                    await self._refuse(participant, "?", validation.bad_request("send JSON text"))
                continue
            if not participant.limiter.try_take():
                if not flooding:  # one error per flood, not one per message
                    error = ProtocolError("rate_limited", "too many messages; slow down")
                    await self._refuse(participant, "?", error)
                flooding = True
                continue
            flooding = False
            await self._handle(participant, message.data)

    async def _handle(self, participant: Participant, text: str) -> None:
        kind = "?"
        try:
            kind, fields = parse_message(text)
            self._stats.count_event(f"ws:{kind}")
            handler = self._handlers.get(kind)
            if handler is None:
                raise ProtocolError("unknown_type", f"unknown message type {kind!r}")
            await handler(participant, fields)
        except ProtocolError as error:
            await self._refuse(participant, kind, error)
        except Exception:
            logger.exception("/ws message %r failed (connection %s)", kind, participant.sid)
            failure = ProtocolError("internal_error", "the server could not handle this message")
            await self._refuse(participant, kind, failure)

    async def _refuse(self, participant: Participant, kind: str, error: ProtocolError) -> None:
        await self._router.reject(participant, kind, error)  # counted, logged, sent as `error`

    async def _disconnect(self, participant: Participant) -> None:
        try:
            await self._membership.leave(participant, reason="disconnect")
        finally:
            self._roster.discard(participant.sid)
            self._router.forget(participant.sid)
            self._sockets.pop(participant.sid, None)
            self._sio.admission.release(participant.sid)

    # -- the messages --------------------------------------------------------------------

    async def _join_room(self, participant: Participant, fields: Fields) -> None:
        room = validation.room_name(fields.get("room_name", fields.get("room")))
        previous = participant.nickname
        try:
            if fields.get("nickname") is not None:
                rename(participant, fields["nickname"], strict=False)
            require_nickname(participant, self._settings.require_nickname)
            joined = await self._membership.join(participant, room, Dialect.WS)
        except ProtocolError:
            participant.nickname = previous  # a refused join changes nothing
            raise
        members = self._roster.visible_members(room)
        assert participant.outbox is not None
        await participant.outbox.deliver(
            "room_joined",
            {
                "room_name": room,
                "peer_id": participant.peer_id,
                "nickname": participant.nickname,
                "peer_count": len(members),
                "other_peers": [
                    {"peer_id": p.peer_id, "nickname": p.nickname}
                    for p in members
                    if p is not participant
                ],
            },
        )
        if joined:
            await self._membership.announce_join(participant, room)

    async def _offer(self, participant: Participant, fields: Fields) -> None:
        room = current_room(self._roster, participant)
        if self._media.mode != "relay":
            raise ProtocolError("unsupported", "/ws clients need a relay server (--media relay)")
        await self._media.on_offer(participant, room, offer_description(fields))

    async def _ice_candidate(self, participant: Participant, fields: Fields) -> None:
        candidate = validation.ice_candidate(candidate_init(fields))
        room = current_room(self._roster, participant)
        if candidate is not None and candidate.candidate.strip():
            take_candidate(participant)
        await self._media.on_ice(participant, room, candidate)

    async def _leave_room(self, participant: Participant, fields: Fields) -> None:
        room = await self._membership.leave(participant, reason="left")
        if room is None:
            raise ProtocolError("not_in_room", "you are not in a room")
        assert participant.outbox is not None
        await participant.outbox.deliver("room_left", {"room_name": room})

    async def _get_rooms(self, participant: Participant, fields: Fields) -> None:
        names = self._access.visible_rooms(participant.grant, self._roster.public_rooms())
        rooms = [
            {"room_name": name, "peer_count": len(self._roster.visible_members(name))}
            for name in names
        ]
        assert participant.outbox is not None
        await participant.outbox.deliver("rooms", {"rooms": rooms})

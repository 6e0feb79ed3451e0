"""The FastRTC audio backend's HTTP API: ``POST /webrtc/offer`` and ``/fastrtc/streams``.

A client of that backend posts a JSON offer and gets a JSON answer; here each
such stream is a participant of a room (``room`` in the body, else
:data:`DEFAULT_ROOM`), exactly like a WHIP or WHEP session (whip.py), so it hears
and is heard by everyone there. ``MAX_STREAMS`` caps how many exist at once.
``GET /`` answers the backend's status JSON to clients that ask for JSON.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import __version__, validation
from .access import AccessError
from .context import SERVER_KEY, RoomServer
from .settings import Settings
from .validation import ProtocolError
from .whip import STATUS_OF, HttpMediaSessions, HttpSession

logger = logging.getLogger(__name__)

DEFAULT_ROOM = "fastrtc"
KIND = "fastrtc"
MODALITIES = {"audio": {"audio"}, "video": {"video"}, "audio-video": {"audio", "video"}}
# mode -> which way the offer must go (see whip.check_direction)
MODES = {"send": "whip", "receive": "whep", "send-receive": "any"}
MAX_BODY = validation.MAX_SDP_BYTES + 4096


@dataclass(frozen=True)
class StreamMeta:
    modality: str
    mode: str
    created_at: float

    def as_dict(self, room: str) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "mode": self.mode,
            "created_at": self.created_at,
            "room": room,
        }


def failure(code: str, message: str, status: int | None = None) -> web.Response:
    """The backend's failure shape, plus roomrelay's ``error``/``message``."""
    body = {"status": "failed", "error": code, "message": message, "meta": {"error": code}}
    return web.json_response(body, status=status or STATUS_OF.get(code, 400))


def wants_json(request: web.Request) -> bool:
    """A client that asks for JSON and not for a page (browsers ask for text/html)."""
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def check_modality(modality: str, sdp: str) -> None:
    """Refuse media kinds the stream's modality does not include."""
    kinds = {line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")}
    extra = kinds - MODALITIES[modality] - {"application"}
    if extra:
        raise ProtocolError(
            "bad_request", f"modality {modality!r} does not allow {', '.join(sorted(extra))}"
        )


class FastRtcApi:
    """Streams created by ``POST /webrtc/offer``, listed and removed by id."""

    def __init__(self, settings: Settings, server: RoomServer, sessions: HttpMediaSessions) -> None:
        self._settings = settings
        self._server = server
        self._sessions = sessions
        self._meta: dict[str, StreamMeta] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/webrtc/offer", self.offer),
            web.get("/fastrtc/streams", self.list_streams),
            web.delete("/fastrtc/streams/{webrtc_id}", self.delete_stream),
        ]

    def _streams(self) -> list[HttpSession]:
        live = self._sessions.sessions(KIND)
        for gone in self._meta.keys() - {s.id for s in live}:
            del self._meta[gone]  # ended by its connection closing
        return live

    async def offer(self, request: web.Request) -> web.Response:
        try:
            grant = self._server.access.request_grant(request.headers, request.query)
        except AccessError as refused:
            self._server.stats.count_error(refused.code)
            return failure(refused.code, refused.message)
        try:
            body = await self._read_body(request)
            room = validation.room_name(body.get("room", DEFAULT_ROOM))
            modality, mode = self._modality_and_mode(body)
            sdp = validation.session_description(
                {"type": body.get("type", "offer"), "sdp": body.get("sdp")}, "offer"
            )["sdp"]
            limit = self._settings.max_streams
            if limit and len(self._streams()) >= limit:
                return failure("too_many_streams", f"at most {limit} streams at once", 503)
            check_modality(modality, sdp)
            session, answer = await self._sessions.open(
                KIND,
                room,
                sdp,
                grant,
                nickname=body.get("nickname"),
                token=None,
                direction=MODES[mode],
            )
        except ProtocolError as error:
            self._server.stats.count_error(error.code)
            logger.info("refused a /webrtc/offer: %s (%s)", error.code, error.message)
            return failure(error.code, error.message)
        meta = self._meta[session.id] = StreamMeta(modality, mode, time.time())
        return web.json_response(
            {
                "status": "success",
                "sdp": answer,
                "type": "answer",
                "webrtc_id": session.id,
                "peer_id": session.participant.peer_id,
                "meta": meta.as_dict(room),
            }
        )

    async def _read_body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise ProtocolError("unsupported_media_type", "send the offer as application/json")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise ProtocolError("too_large", "the offer is too large")
        try:
            body = json.loads(raw)
        except ValueError:
            raise validation.bad_request("the body is not JSON") from None
        return validation.mapping(body, "the body")

    @staticmethod
    def _modality_and_mode(body: dict[str, Any]) -> tuple[str, str]:
        modality, mode = body.get("modality", "audio"), body.get("mode", "send-receive")
        if modality not in MODALITIES:
            raise validation.bad_request(f"modality must be one of {', '.join(MODALITIES)}")
        if mode not in MODES:
            raise validation.bad_request(f"mode must be one of {', '.join(MODES)}")
        return modality, mode

    async def list_streams(self, request: web.Request) -> web.Response:
        try:
            grant = self._server.access.request_grant(request.headers, request.query)
        except AccessError as refused:
            return failure(refused.code, refused.message)
        streams = [
            {
                "webrtc_id": session.id,
                "peer_id": session.participant.peer_id,
                "nickname": session.participant.nickname,
                **self._meta[session.id].as_dict(session.room),
            }
            for session in self._streams()
            if session.id in self._meta and self._server.access.may_see(grant, session.room)
        ]
        return web.json_response({"status": "success", "streams": streams, "count": len(streams)})

    async def delete_stream(self, request: web.Request) -> web.Response:
        try:
            grant = self._server.access.request_grant(request.headers, request.query)
        except AccessError as refused:
            return failure(refused.code, refused.message)
        session = self._sessions.get(request.match_info["webrtc_id"])
        if session is None or session.kind != KIND:
            return failure("not_found", "no such stream")
        if not self._server.access.may_see(grant, session.room):
            return failure("not_found", "no such stream")
        await self._sessions.end(session)
        self._meta.pop(session.id, None)
        return web.json_response({"status": "success", "webrtc_id": session.id})

    def status(self) -> dict[str, Any]:
        """``GET /`` for JSON clients: the backend's status document."""
        server = self._server
        return {
            "status": "running",
            "service": "roomrelay",
            "version": __version__,
            "uptime_s": round(server.stats.uptime, 3),
            "media": server.media.mode,
            "streams": len(self._streams()),
            "max_streams": self._settings.max_streams,
            "connections": len(server.roster),
            "rooms": len(server.roster.public_rooms()),
        }


async def json_status(request: web.Request) -> dict[str, Any] | None:
    """The status JSON when the request asks for JSON, else None (serve the page)."""
    api = request.app.get(FASTRTC_KEY)
    if api is None or not wants_json(request) or SERVER_KEY not in request.app:
        return None
    return api.status()


FASTRTC_KEY = web.AppKey("fastrtc", FastRtcApi)

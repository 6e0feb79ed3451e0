"""WHIP ingest (RFC 9725) at ``/whip/{room}`` and WHEP egress at ``/whep/{room}``.

Broadcast tools (OBS, GStreamer) publish into a room, and players watch one,
with nothing but HTTP: ``POST`` an SDP offer, get ``201 Created`` with the
answer and a ``Location`` for the session; ``PATCH`` trickles ICE candidates;
``DELETE`` ends it. Each session is a participant of the room, like a /ws
client (see rooms.Outbox): counted, listed, recorded and announced to every
dialect. A WHEP viewer has one audio and one video slot that follow the active
speaker, so it switches without ever renegotiating.

aiortc cannot restart ICE on an existing connection, so a PATCH with new ICE
credentials gets ``422`` (RFC 9725 §4.4.1), and the client starts a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import validation
from .access import AccessError, rename
from .connections import new_participant
from .context import RoomServer
from .grants import Grant
from .media.offer import ParsedOffer, parse_offer
from .rooms import Dialect, Participant
from .settings import Settings, parse_origins
from .turn import IceServerList
from .validation import IceCandidate, ProtocolError

logger = logging.getLogger(__name__)

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
ANSWER_TIMEOUT = 20.0  # seconds the relay may take to answer an offer
MAX_SECTIONS = 8  # m-lines in one WHIP/WHEP offer: a broadcast is an audio and a video
MAX_FRAGMENT_CANDIDATES = 64

# How a refusal's code reads as an HTTP status.
STATUS_OF = {
    "unauthorized": 401,
    "token_expired": 401,
    "forbidden": 403,
    "room_locked": 403,
    "room_full": 409,
    "precondition_failed": 412,
    "too_large": 413,
    "ice_restart_unsupported": 422,
    "unsupported_sdp": 406,
    "no_usable_codec": 406,
    "not_found": 404,
    "unsupported_media_type": 415,
    "unsupported": 501,
    "server_busy": 503,
    "answer_timeout": 504,
}


def refusal(code: str, message: str, **headers: str) -> web.Response:
    """An HTTP error with the ``{error, message}`` body every other endpoint uses."""
    status = STATUS_OF.get(code, 400)
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def link_headers(servers: list[dict[str, Any]]) -> list[str]:
    """``Link: <url>; rel="ice-server"`` values (RFC 9725 §4.6), credentials quoted."""
    links = []
    for server in servers:
        urls = server.get("urls", [])
        for url in [urls] if isinstance(urls, str) else urls:
            link = f'<{url}>; rel="ice-server"'
            if "username" in server and "credential" in server:
                link += (
                    f'; username="{server["username"]}"; credential="{server["credential"]}"'
                    '; credential-type="password"'
                )
            links.append(link)
    return links


@dataclass
class SessionOutbox:
    """What the relay tells an HTTP session: its answer (or why not), and its connection's end."""

    answer: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(self, event: str, data: Any) -> None:
        payload = data if isinstance(data, dict) else {}
        if event == "answer" and not self.answer.done():
            self.answer.set_result(str(payload.get("sdp", "")))
        elif event == "error" and not self.answer.done():
            code, message = str(payload.get("code")), str(payload.get("message"))
            self.answer.set_exception(ProtocolError(code, message))
        elif event == "media_closed":
            self.closed.set()


@dataclass
class HttpSession:
    """One WHIP or WHEP session: a participant reachable at its resource URL."""

    id: str
    kind: str  # "whip" or "whep"
    room: str
    participant: Participant
    outbox: SessionOutbox
    token: str | None  # the bearer token that created it; PATCH and DELETE must present it
    ice_ufrag: str
    etag: str = field(default_factory=lambda: f'"{secrets.token_hex(8)}"')
    watcher: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        return f"/{self.kind}/{self.room}/{self.id}"


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def trickled_candidates(fragment: str) -> tuple[str | None, list[IceCandidate | None]]:
    """The ICE ufrag and candidates of an ``application/trickle-ice-sdpfrag`` body (RFC 8840).

    ``a=end-of-candidates`` becomes None (end of gathering).
    """
    ufrag: str | None = None
    mid: str | None = None
    index = -1
    found: list[IceCandidate | None] = []
    for raw in fragment.splitlines():
        line = raw.strip()
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.removeprefix("a=ice-ufrag:")
        elif line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
        elif line.startswith("a=candidate:"):
            line_index = max(index, 0) if mid is None else None
            init = {
                "candidate": line.removeprefix("a="),
                "sdpMid": mid,
                "sdpMLineIndex": line_index,
            }
            found.append(validation.ice_candidate(init))
        elif line == "a=end-of-candidates":
            found.append(None)
    if len(found) > MAX_FRAGMENT_CANDIDATES:
        raise ProtocolError("too_large", f"at most {MAX_FRAGMENT_CANDIDATES} candidates a PATCH")
    return ufrag, found


def check_direction(direction: str, offer: ParsedOffer) -> ParsedOffer:
    """WHIP offers send media, WHEP offers only receive it; ``any`` takes both."""
    media = [s for s in offer.sections if s.kind in ("audio", "video")]
    if direction == "whip" and not any(s.client_sends for s in media):
        raise ProtocolError("bad_request", "a WHIP offer must send audio or video")
    if direction == "whep" and not any(s.client_receives for s in media):
        raise ProtocolError("bad_request", "a WHEP offer must receive audio or video")
    if direction == "whep" and any(s.client_sends for s in media):
        raise ProtocolError("bad_request", "a WHEP offer must be recvonly; publish with WHIP")
    if not media:
        raise ProtocolError("bad_request", "the offer has no audio or video")
    return offer


class HttpMediaSessions:
    """Serves WHIP and WHEP: sessions by id, each one participant of one room."""

    def __init__(self, settings: Settings, server: RoomServer, ice_servers: IceServerList) -> None:
        self._settings = settings
        self._server = server
        self._ice_servers = ice_servers
        self._sessions: dict[str, HttpSession] = {}
        origins = parse_origins(settings.cors_origins)
        self._cors_origin = "*" if origins is None else origins  # WHIP tools are not browsers

    def routes(self) -> list[web.RouteDef]:
        routes = []
        for kind in ("whip", "whep"):
            routes += [
                web.post(f"/{kind}/{{room}}", self._post(kind)),
                web.options(f"/{kind}/{{room}}", self.options),
                web.patch(f"/{kind}/{{room}}/{{session}}", self.patch),
                web.delete(f"/{kind}/{{room}}/{{session}}", self.delete),
                web.options(f"/{kind}/{{room}}/{{session}}", self.options),
            ]
        return routes

    async def add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        """CORS on every WHIP/WHEP response, so that browser players can read Location."""
        if not request.path.startswith(("/whip/", "/whep/")):
            return
        origin = request.headers.get("Origin")
        allowed = self._cors_origin
        if allowed == "*":
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        else:
            return
        response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag, Accept-Post"

    @property
    def count(self) -> int:
        return len(self._sessions)

    # -- OPTIONS ---------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        headers = {
            "Accept-Post": SDP,
            "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Max-Age": "600",
        }
        response = web.Response(status=204, headers=headers)
        for link in link_headers(self._ice_servers.for_client("whip")):
            response.headers.add("Link", link)
        return response

    # -- POST: a new session ---------------------------------------------------------------

    def _post(self, kind: str) -> Any:
        async def create(request: web.Request) -> web.StreamResponse:
            return await self._create(request, kind)

        return create

    async def _create(self, request: web.Request, kind: str) -> web.StreamResponse:
        if request.content_type != SDP:
            return refusal(
                "unsupported_media_type", f"send the offer as {SDP}", **{"Accept-Post": SDP}
            )
        try:
            grant = self._server.access.request_grant(request.headers, request.query)
        except AccessError as refused:
            self._server.stats.count_error(refused.code)
            return refusal(refused.code, refused.message)
        try:
            room = validation.room_name(request.match_info["room"])
            sdp = await self._read_offer(request)
            session, answer = await self.open(
                kind,
                room,
                sdp,
                grant,
                nickname=request.query.get("nickname"),
                token=bearer_token(request),
                direction=kind,
            )
        except ProtocolError as error:
            return self._refused(kind, error)
        response = web.Response(
            status=201,
            body=answer.encode(),
            content_type=SDP,
            headers={"Location": session.location, "ETag": session.etag},
        )
        for link in link_headers(self._ice_servers.for_client(session.participant.peer_id)):
            response.headers.add("Link", link)
        return response

    async def open(
        self,
        kind: str,
        room: str,
        sdp: str,
        grant: Grant,
        *,
        nickname: str | None,
        token: str | None,
        direction: str,
    ) -> tuple[HttpSession, str]:
        """A new session in ``room`` and the relay's answer, or ProtocolError (nothing kept).

        ``direction``: ``whip`` (the offer must send), ``whep`` (must only receive) or
        ``any``. Also serves POST /webrtc/offer (fastrtc.py).
        """
        offer = check_direction(direction, parse_offer(sdp, MAX_SECTIONS))
        outbox = SessionOutbox()
        session_id = secrets.token_urlsafe(16)
        participant = new_participant(
            self._settings, f"{kind}-{session_id}", grant, follows_rooms=False, outbox=outbox
        )
        session = HttpSession(session_id, kind, room, participant, outbox, token, offer.ice_ufrag)
        self._server.roster.add(participant)
        self._sessions[session_id] = session
        try:
            answer = await self._start(session, nickname, sdp)
        except ProtocolError:
            await self._end(session, "refused")
            raise
        session.watcher = asyncio.create_task(self._watch(session))
        return session, answer

    def sessions(self, kind: str) -> list[HttpSession]:
        return [session for session in self._sessions.values() if session.kind == kind]

    def get(self, session_id: str) -> HttpSession | None:
        return self._sessions.get(session_id)

    async def end(self, session: HttpSession) -> None:
        """End a session on request (DELETE)."""
        await self._end(session, "left")

    def _refused(self, kind: str, error: ProtocolError) -> web.Response:
        self._server.stats.count_error(error.code)
        logger.info("refused a %s offer: %s (%s)", kind.upper(), error.code, error.message)
        return refusal(error.code, error.message)

    async def _read_offer(self, request: web.Request) -> str:
        body = await request.content.read(validation.MAX_SDP_BYTES + 1)
        if len(body) > validation.MAX_SDP_BYTES:
            raise ProtocolError("too_large", f"the offer is longer than {validation.MAX_SDP_BYTES}")
        try:
            sdp = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid_sdp", "the offer is not UTF-8 text") from None
        return validation.session_description({"type": "offer", "sdp": sdp}, "offer")["sdp"]

    async def _start(self, session: HttpSession, nickname: str | None, sdp: str) -> str:
        """Join the room under the requested name, offer, and wait for the relay's answer."""
        server, participant = self._server, session.participant
        if server.media.mode != "relay":
            raise ProtocolError("unsupported", "WHIP and WHEP need a relay server (--media relay)")
        if nickname is not None:
            rename(participant, nickname, strict=False)
        elif participant.grant.identity is None:
            participant.nickname = session.kind.upper()
        await server.membership.join(participant, session.room, Dialect.HTTP)
        await server.membership.announce_join(participant, session.room)
        await server.media.on_offer(participant, session.room, {"type": "offer", "sdp": sdp})
        try:
            return await asyncio.wait_for(session.outbox.answer, ANSWER_TIMEOUT)
        except TimeoutError:
            raise ProtocolError("answer_timeout", "the relay did not answer in time") from None

    async def _watch(self, session: HttpSession) -> None:
        """End the session when its connection fails or closes (no DELETE will come)."""
        await session.outbox.closed.wait()
        if self._sessions.get(session.id) is session:
            logger.info("%s session %s ended: its connection closed", session.kind, session.id)
            await self._end(session, "disconnect")

    async def _end(self, session: HttpSession, reason: str) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        try:
            await self._server.membership.leave(session.participant, reason=reason)
        finally:
            self._server.roster.discard(session.participant.sid)
            if session.watcher is not None and session.watcher is not asyncio.current_task():
                session.watcher.cancel()

    # -- PATCH and DELETE ---------------------------------------------------------------

    def _session_of(self, request: web.Request) -> HttpSession | web.Response:
        session = self._sessions.get(request.match_info["session"])
        kind = request.path.split("/")[1]
        if session is None or session.kind != kind or session.room != request.match_info["room"]:
            return refusal("not_found", "no such session (it ended, or never existed)")
        if session.token is not None and bearer_token(request) != session.token:
            return refusal("unauthorized", "present the token that created the session")
        return session

    async def patch(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        if isinstance(session, web.Response):
            return session
        try:
            await self._trickle(session, request)
        except ProtocolError as error:
            return refusal(error.code, error.message)
        return web.Response(status=204)

    async def _trickle(self, session: HttpSession, request: web.Request) -> None:
        """Apply a PATCH's candidates (RFC 8840 fragment), or raise saying why not."""
        if request.content_type != TRICKLE:
            raise ProtocolError("unsupported_media_type", f"send candidates as {TRICKLE}")
        match = request.headers.get("If-Match")
        if match is not None and match not in ("*", session.etag):
            raise ProtocolError("precondition_failed", "the session's ETag does not match")
        body = await request.content.read(validation.MAX_SDP_BYTES + 1)
        if len(body) > validation.MAX_SDP_BYTES:
            raise ProtocolError("too_large", "the fragment is too long")
        try:
            ufrag, candidates = trickled_candidates(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise validation.bad_request("the fragment is not UTF-8 text") from None
        if ufrag is not None and ufrag != session.ice_ufrag:
            raise ProtocolError(
                "ice_restart_unsupported",
                "ICE restarts are not supported: DELETE this session and POST a new offer",
            )
        for candidate in candidates:
            await self._server.media.on_ice(session.participant, session.room, candidate)

    async def delete(self, request: web.Request) -> web.Response:
        session = self._session_of(request)
        if isinstance(session, web.Response):
            return session
        await self.end(session)
        return web.Response(status=200)

    async def close(self) -> None:
        """End every session (server shutdown)."""
        for session in list(self._sessions.values()):
            with contextlib.suppress(Exception):
                await self._end(session, "shutdown")

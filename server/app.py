"""The aiohttp application factory: wires Socket.IO, media, HTTP API and static pages."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp_cors
import socketio
from aiohttp import web
from aiohttp.typedefs import Handler

from .access import AccessControl
from .admin_api import AdminApi
from .audio.hub import AudioHub, build_consumers
from .audio.transcripts import TranscriptStore
from .backends import MediaBackend
from .backends.p2p import PeerToPeerBackend
from .backends.relay import RelayBackend, SocketRoomOutput
from .client_bundle import add_client_bundle_routes
from .connections import register_connection_events
from .context import SERVER_KEY, RoomServer
from .events import EventRouter
from .http_api import api_routes
from .media.publication import PublicationObserver
from .media.types import MediaConfig
from .membership import Membership
from .metrics import PublicationLedger, add_metrics_routes, metrics_registry
from .moderation import Moderation, register_moderation_events
from .native import native_join, register_native_events
from .rooms import DEFAULT_NICKNAME, Roster
from .settings import Settings, parse_origins
from .stats import Stats
from .webhooks import Webhooks
from .zoomclone import register_zoomclone_events

logger = logging.getLogger(__name__)

# Largest Socket.IO message accepted: a 64 KiB SDP plus JSON framing, with room to spare.
MAX_MESSAGE_BYTES = 256 * 1024
# Seconds the server gives its clients' goodbye (CLOSE) packets when stopping.
GOODBYE_TIMEOUT = 1.0


class SocketServer(socketio.AsyncServer):
    """python-socketio's server, with malformed packets dropped quietly instead of raising."""

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # Our handlers catch their own errors (events.py), so this is a packet that
            # python-socketio could not decode: bad JSON, no event name, and the like.
            logger.warning("dropped a malformed Socket.IO packet from %s: %r", eio_sid, exc)


def media_config(settings: Settings) -> MediaConfig:
    """The media core's few settings."""
    return MediaConfig(
        forwarding=settings.forwarding == "forward",
        connect_timeout=settings.media_timeout,
        ice_servers=settings.ice_servers,
        # A client may receive from everyone else and publish a few tracks of its own.
        max_media_sections=4 * settings.max_peers_per_room + 8,
    )


def create_media(
    settings: Settings,
    sio: socketio.AsyncServer,
    roster: Roster,
    router: EventRouter,
    audio: AudioHub,
    observers: list[PublicationObserver],
) -> MediaBackend:
    if settings.media == "p2p":
        return PeerToPeerBackend(roster)
    return RelayBackend(sio, roster, router, media_config(settings), audio, observers)


def create_webhooks(settings: Settings, access: AccessControl, roster: Roster) -> Webhooks | None:
    """Webhooks when a URL is set; they are signed with the first API key."""
    if not settings.webhook_url:
        return None
    if not settings.webhook_url.startswith(("http://", "https://")):
        raise ValueError(f"--webhook-url must be an http(s) URL, got {settings.webhook_url!r}")
    signing_key = access.signing_key()
    if signing_key is None:
        raise ValueError("--webhook-url needs an API key to sign with (--api-key/--api-secret)")
    return Webhooks(settings.webhook_url, *signing_key, roster)


def create_audio(
    settings: Settings,
    sio: socketio.AsyncServer,
    roster: Roster,
    webhooks: Webhooks | None = None,
) -> AudioHub:
    """Audio consumers from the settings; they only get audio in relay mode."""
    transcripts = TranscriptStore()
    consumers = build_consumers(
        settings.record_dir,
        settings.stt,
        settings.audio_consumers,
        transcripts,
        record_rooms=settings.record_rooms,
        stt_rooms=settings.stt_rooms,
        stt_partials=settings.stt_partials,
        recording_finished=webhooks.recording_finished if webhooks else None,
    )
    if consumers and settings.media != "relay":
        raise ValueError("recording, captions and audio consumers need --media relay")

    def nickname_of(peer_id: str) -> str:
        participant = roster.by_peer_id(peer_id)
        return participant.nickname if participant else DEFAULT_NICKNAME

    return AudioHub(
        consumers, SocketRoomOutput(sio), transcripts, settings.tap_buffer_seconds, nickname_of
    )


def add_cors(app: web.Application, routes: list[web.AbstractRoute], origins: str) -> None:
    """CORS for the HTTP API, from the same setting python-socketio uses."""
    allowed = parse_origins(origins)
    if allowed is None:
        return  # same origin only: no CORS headers at all
    options = aiohttp_cors.ResourceOptions(allow_headers="*", expose_headers="*", max_age=600)
    origins_list = ["*"] if allowed == "*" else list(allowed)
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins_list, options))
    for route in routes:
        cors.add(route)


def page_handler(path: Path) -> Handler:
    async def serve_page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return serve_page


def add_page_routes(app: web.Application, settings: Settings) -> None:
    """The bundled page at ``/``, or a zoom-clone page and its ``/public`` folder."""
    index = settings.index or settings.static_dir / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"page not found: {index}")
    app.router.add_get("/", page_handler(index))
    if settings.static_dir.is_dir():
        app.router.add_static("/static", settings.static_dir)
    if settings.public_dir is not None:
        if not settings.public_dir.is_dir():
            raise FileNotFoundError(f"--public-dir is not a folder: {settings.public_dir}")
        app.router.add_static("/public", settings.public_dir)


def create_app(settings: Settings) -> web.Application:
    """Build the whole server; raises with a clear message when setup is incomplete."""
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    client_version = add_client_bundle_routes(app, settings.client_dir)

    sio = SocketServer(
        async_mode="aiohttp",
        cors_allowed_origins=parse_origins(settings.cors_origins),
        async_handlers=False,  # keeps every connection's events in order (see events.py)
        max_http_buffer_size=MAX_MESSAGE_BYTES,
        logger=logging.getLogger("socketio.server"),
        engineio_logger=logging.getLogger("engineio.server"),
    )
    sio.attach(app)

    access = AccessControl.from_settings(settings)
    stats = Stats()
    roster = Roster(sio, settings.max_peers_per_room)
    router = EventRouter(sio, roster, stats)
    webhooks = create_webhooks(settings, access, roster)
    audio = create_audio(settings, sio, roster, webhooks)
    ledger = PublicationLedger()
    observers: list[PublicationObserver] = [ledger, *([webhooks] if webhooks else [])]
    media = create_media(settings, sio, roster, router, audio, observers)
    membership = Membership(sio, roster, media, access, webhooks)
    register_connection_events(sio, settings, roster, router, membership, stats, access)
    register_zoomclone_events(
        router,
        roster,
        membership,
        media,
        join_with_object=native_join(
            router, roster, membership, media, audio, settings.ice_servers
        ),
    )
    register_native_events(router, roster, membership, access)
    moderation = Moderation(
        sio, roster, membership, media, access, first_is_host=settings.first_is_host
    )
    register_moderation_events(router, roster, moderation)
    admin_api = AdminApi(roster, access, moderation, stats)

    server = app[SERVER_KEY] = RoomServer(
        roster=roster,
        stats=stats,
        media=media,
        audio=audio,
        client_version=client_version,
        access=access,
    )
    add_metrics_routes(
        app,
        metrics_registry(server, ledger),
        host=settings.metrics_host or settings.host,
        port=settings.metrics_port,
    )
    add_cors(
        app, app.router.add_routes([*api_routes(), *admin_api.routes()]), settings.cors_origins
    )
    add_page_routes(app, settings)

    async def start_audio(app: web.Application) -> None:
        await audio.start()

    async def shut_down(app: web.Application) -> None:
        # Tell every client we are going (open websockets and long polls would
        # otherwise wait out aiohttp's shutdown timeout, see cli.SHUTDOWN_TIMEOUT).
        # Bounded: engine.io waits for each socket's send queue to drain, which never
        # happens for a client whose connection closed at the same moment.
        if sio.eio.sockets:  # engine.io's disconnect() raises when there is nobody
            try:
                await asyncio.wait_for(sio.eio.disconnect(), GOODBYE_TIMEOUT)
            except TimeoutError:
                logger.info("some clients did not take their goodbye; closing anyway")
        await sio.shutdown()
        await media.close()
        await audio.close()

    app.on_startup.append(start_audio)
    app.on_shutdown.append(shut_down)
    if webhooks is not None:
        # Started before the first join, stopped after the recordings are finalized.
        app.on_startup.append(lambda app: webhooks.start())
        app.on_shutdown.append(lambda app: webhooks.close())
    return app

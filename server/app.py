"""The aiohttp application factory: wires Socket.IO, media, HTTP API and static pages."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp_cors
import socketio
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .access import AccessControl
from .admin_api import AdminApi
from .admission import Admission
from .audio.hub import AudioHub, build_consumers
from .audio.live import LiveAudio
from .audio.transcripts import TranscriptStore
from .backends import MediaBackend
from .backends.p2p import PeerToPeerBackend
from .backends.relay import RelayBackend, SocketRoomOutput
from .blur_model import add_blur_model_routes
from .client_bundle import add_client_bundle_routes
from .cluster.manager import client_manager
from .cluster.setup import MediaWrapper, cluster_media, create_cluster, run_cluster
from .connections import register_connection_events
from .context import SERVER_KEY, RoomServer
from .events import EventRouter
from .fastrtc import FASTRTC_KEY, FastRtcApi, json_status
from .gc_pacing import add_gc_pacing
from .gestures import HandQueue, register_gesture_events
from .http_api import api_routes
from .http_security import add_security_headers, host_guard, origin_checker
from .loop_health import LoopLag
from .media.publication import PublicationObserver
from .media.sdp_budget import configure_candidates
from .media.sfu import Sfu
from .media.types import MediaConfig, MediaListener
from .membership import Membership
from .metrics import PublicationLedger, add_metrics_routes, metrics_registry
from .moderation import Moderation, register_moderation_events
from .native import native_join, register_native_events
from .room_limits import RoomLimits
from .rooms import DEFAULT_NICKNAME, Roster
from .settings import Settings, parse_origins
from .socket_server import SocketServer
from .stats import Stats
from .transport import without_websocket_compression
from .transport_guard import stale_sessions_are_bad_requests
from .turn import IceServerList
from .webhooks import Webhooks
from .whip import HttpMediaSessions
from .workers.setup import create_worker_relay, worker_count
from .ws_audio import AudioSockets
from .ws_dialect import WebSocketDialect
from .zoomclone import register_zoomclone_events

logger = logging.getLogger(__name__)

# Largest Socket.IO message accepted: a 64 KiB SDP plus JSON framing, with room to spare.
MAX_MESSAGE_BYTES = 256 * 1024
# Seconds the server gives its clients' goodbye (CLOSE) packets when stopping.
GOODBYE_TIMEOUT = 1.0
# Seconds of event-loop lateness over which the server judges whether to take new joins.
BUSY_WINDOW = 5.0


def media_config(settings: Settings, ice_servers: tuple[dict[str, Any], ...]) -> MediaConfig:
    """The media core's few settings."""
    return MediaConfig(
        forwarding=settings.forwarding == "forward",
        connect_timeout=settings.media_timeout,
        ice_servers=ice_servers,
        # A client may receive from everyone else and publish a few tracks of its own.
        max_media_sections=4 * settings.max_peers_per_room + 8,
        max_publish_bitrate=1000 * settings.max_publish_kbps,
    )


def create_media(
    settings: Settings,
    sio: socketio.AsyncServer,
    roster: Roster,
    router: EventRouter,
    audio: AudioHub,
    observers: list[PublicationObserver],
    wrap: MediaWrapper | None = None,
) -> MediaBackend:
    if settings.media == "p2p":
        return PeerToPeerBackend(roster)
    config = relay_config(settings)
    if wrap is None:
        return RelayBackend(sio, roster, router, config, audio, observers)

    def sfu(listener: MediaListener) -> Sfu:
        return Sfu(config, listener=listener, observers=[audio, *observers])

    return RelayBackend(sio, roster, router, config, audio, media=wrap(sfu))


def create_media_and_audio(
    app: web.Application,
    settings: Settings,
    sio: socketio.AsyncServer,
    roster: Roster,
    router: EventRouter,
    webhooks: Webhooks | None,
    observers: list[PublicationObserver],
    wrap: MediaWrapper | None = None,
) -> tuple[MediaBackend, AudioHub]:
    """In this process, or with the rooms' media (and audio) on worker processes;
    ``wrap`` puts the media core in a cluster (REDIS_URL)."""
    if worker_count(settings) > 1:
        config = relay_config(settings)
        return create_worker_relay(
            app, settings, sio, roster, router, config, webhooks, observers, wrap
        )
    audio = create_audio(settings, sio, roster, webhooks)
    return create_media(settings, sio, roster, router, audio, observers, wrap), audio


def relay_config(settings: Settings) -> MediaConfig:
    """The relay's media settings (and the process-wide candidate policy)."""
    configure_candidates(allow_loopback=settings.allow_loopback_candidates)
    ice_servers = IceServerList(settings.ice_servers, settings.turn_secret).for_server()
    return media_config(settings, ice_servers)


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
    if settings.media == "relay":
        consumers.append(LiveAudio())  # WS /ws/audio listeners (ws_audio.py)

    def nickname_of(peer_id: str) -> str:
        participant = roster.by_peer_id(peer_id)
        return participant.nickname if participant else DEFAULT_NICKNAME

    return AudioHub(
        consumers,
        SocketRoomOutput(sio, roster),
        transcripts,
        settings.tap_buffer_seconds,
        nickname_of,
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
        status = await json_status(request)  # FastRTC clients ask GET / for JSON
        if status is not None:
            return web.json_response(status)
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return serve_page


def socketio_origins(text: str) -> tuple[object, bool]:
    """python-socketio's ``cors_allowed_origins`` and ``cors_credentials`` for CORS_ORIGINS.

    A list always admits the server's own origin too; '*' never sends credentials.
    """
    allowed = parse_origins(text)
    if isinstance(allowed, list):
        return origin_checker(allowed), True
    return allowed, allowed != "*"


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


def create_web_app(settings: Settings) -> web.Application:
    """The aiohttp application and its request-level guards."""
    middlewares: list[Middleware] = [stale_sessions_are_bad_requests]
    if settings.allowed_hosts:
        middlewares.append(host_guard(settings.allowed_hosts))
    if not settings.websocket_compression:
        middlewares.append(without_websocket_compression())
    return web.Application(client_max_size=MAX_MESSAGE_BYTES, middlewares=middlewares)


def create_socket_server(settings: Settings, app: web.Application) -> SocketServer:
    """python-socketio on ``app``, with admission, CORS, pings and bounded fan-out."""
    cors_origins, cors_credentials = socketio_origins(settings.cors_origins)
    sio = SocketServer(
        Admission(settings.max_connections, settings.max_connections_per_ip),
        async_mode="aiohttp",
        cors_allowed_origins=cors_origins,
        cors_credentials=cors_credentials,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        client_manager=client_manager(settings.redis_url, settings.max_queued_messages),
        async_handlers=False,  # keeps every connection's events in order (see events.py)
        max_http_buffer_size=MAX_MESSAGE_BYTES,
        logger=logging.getLogger("socketio.server"),
        engineio_logger=logging.getLogger("engineio.server"),
    )
    sio.attach(app)
    return sio


Dialects = list[WebSocketDialect | AudioSockets | HttpMediaSessions]


def add_http_dialects(
    app: web.Application,
    settings: Settings,
    server: RoomServer,
    router: EventRouter,
    ice_servers: IceServerList,
) -> Dialects:
    """Clients that are not Socket.IO's: the FastAPI relay's ``/ws``, WHIP, WHEP, FastRTC."""
    ws_dialect = WebSocketDialect(settings, server, router)
    app.router.add_routes(ws_dialect.routes())
    http_sessions = HttpMediaSessions(settings, server, ice_servers)
    app.router.add_routes(http_sessions.routes())
    app.on_response_prepare.append(http_sessions.add_cors)
    fastrtc = app[FASTRTC_KEY] = FastRtcApi(settings, server, http_sessions)
    app.router.add_routes(fastrtc.routes())
    audio_sockets = AudioSockets(settings, server, http_sessions)
    app.router.add_routes(audio_sockets.routes())
    return [ws_dialect, audio_sockets, http_sessions]


async def say_goodbye(sio: socketio.AsyncServer, dialects: Dialects) -> None:
    """Tell every client we are going (open websockets and long polls would
    otherwise wait out aiohttp's shutdown timeout, see cli.SHUTDOWN_TIMEOUT).

    Bounded: engine.io waits for each socket's send queue to drain, which never
    happens for a client whose connection closed at the same moment.
    """
    if sio.eio.sockets:  # engine.io's disconnect() raises when there is nobody
        try:
            await asyncio.wait_for(sio.eio.disconnect(), GOODBYE_TIMEOUT)
        except TimeoutError:
            logger.info("some clients did not take their goodbye; closing anyway")
    for dialect in dialects:
        await dialect.close()


def create_app(settings: Settings) -> web.Application:
    """Build the whole server; raises with a clear message when setup is incomplete."""
    app = create_web_app(settings)
    client_version = add_client_bundle_routes(app, settings.client_dir)
    add_blur_model_routes(app, settings.segmentation_dir)
    sio = create_socket_server(settings, app)

    ice_servers = IceServerList(settings.ice_servers, settings.turn_secret, settings.turn_ttl)
    ice_servers.warn_about_static_credentials()
    access = AccessControl.from_settings(settings)
    stats = Stats()
    limits = RoomLimits(
        settings.max_rooms,
        settings.max_participants,
        chat_rate=settings.room_chat_rate,
        chat_burst=max(1, round(2 * settings.room_chat_rate)),
    )
    roster = Roster(sio, settings.max_peers_per_room, limits)
    cluster = create_cluster(settings, roster) if settings.redis_url else None
    router = EventRouter(sio, roster, stats)
    webhooks = create_webhooks(settings, access, roster)
    ledger = PublicationLedger()
    observers: list[PublicationObserver] = [ledger, *([webhooks] if webhooks else [])]
    media, audio = create_media_and_audio(
        app, settings, sio, roster, router, webhooks, observers, cluster_media(cluster, roster)
    )
    loop_lag = LoopLag()
    membership = Membership(
        sio,
        roster,
        media,
        overloaded=lambda: loop_lag.recent_median(BUSY_WINDOW) >= settings.busy_lag,
        access=access,
        observer=webhooks,
        resume_grace=settings.resume_grace,
    )
    hands = HandQueue(roster)
    moderation = Moderation(
        sio, roster, membership, media, access, stats, first_is_host=settings.first_is_host
    )
    register_connection_events(sio, settings, roster, router, membership, stats, access)
    register_zoomclone_events(
        router,
        roster,
        membership,
        media,
        join_with_object=native_join(
            router,
            roster,
            membership,
            media,
            audio,
            ice_servers,
            hands,
            moderation,
            nickname_required=settings.require_nickname,
        ),
        nickname_required=settings.require_nickname,
    )
    register_native_events(router, roster, membership, access)
    register_gesture_events(router, roster, hands)
    register_moderation_events(router, roster, moderation)
    admin_api = AdminApi(roster, access, moderation, stats)

    server = app[SERVER_KEY] = RoomServer(
        sio=sio,
        roster=roster,
        membership=membership,
        stats=stats,
        media=media,
        audio=audio,
        loop_lag=loop_lag,
        gc_pacer=add_gc_pacing(app),
        client_version=client_version,
        access=access,
        webhooks=webhooks,
        cluster=cluster,
    )
    run_cluster(app, cluster, sio, roster, membership, moderation)
    dialects = add_http_dialects(app, settings, server, router, ice_servers)
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
    bundled_page = () if settings.index else ("/", "/static/index.html")
    add_security_headers(app, bundled_page, tls=settings.tls_cert is not None)

    async def start(app: web.Application) -> None:
        loop_lag.start()
        await audio.start()

    async def shut_down(app: web.Application) -> None:
        await say_goodbye(sio, dialects)
        await membership.close()
        await sio.shutdown()
        await media.close()
        await audio.close()
        await loop_lag.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(shut_down)
    if webhooks is not None:
        # Started before the first join, stopped after the recordings are finalized.
        app.on_startup.append(lambda app: webhooks.start())
        app.on_shutdown.append(lambda app: webhooks.close())
    return app

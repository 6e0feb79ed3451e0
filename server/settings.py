"""Every runtime setting in one place: CLI flag, environment variable, default and help.

The CLI parser and the README's configuration table are both derived from
``SETTINGS_SPEC`` so they cannot drift apart from the code.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIENT_DIR = PROJECT_ROOT / "node_modules" / "socket.io-client" / "dist"
DEFAULT_SEGMENTATION_DIR = PROJECT_ROOT / "node_modules" / "@mediapipe" / "selfie_segmentation"
DEFAULT_STATIC_DIR = PROJECT_ROOT / "static"

MEDIA_MODES = ("relay", "p2p")
FORWARDING_MODES = ("forward", "transcode")
LOG_LEVELS = ("debug", "info", "warning", "error")
AUTH_MODES = ("auto", "open", "token")
LOG_FORMATS = ("text", "json")


def _setting(
    default: Any,
    env: str,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """Declare a dataclass field together with its environment variable and help text."""
    return field(
        default=default,
        metadata={"env": env, "help": help, "choices": choices, "parse": parse},
    )


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text else None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _host_names(text: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _import_paths(text: str) -> tuple[str, ...]:
    paths = tuple(part.strip() for part in text.split(",") if part.strip())
    for path in paths:
        if ":" not in path:
            raise ValueError(f"expected module:Class, got {path!r}")
    return paths


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(text: str) -> str:
    text = text.strip()
    if text and not text.startswith(REDIS_SCHEMES):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {text!r}")
    return text


def _optional_port(text: str) -> int | None:
    if not text.strip() or text.strip() == "0":
        return None
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"not a TCP port: {value}")
    return value


def _api_keys(text: str) -> tuple[tuple[str, str], ...]:
    """``key1:secret1,key2:secret2``; secrets must be long enough for HS256."""
    pairs = []
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        key, sep, secret = part.partition(":")
        if not sep or not key.strip():
            raise ValueError("expected key:secret pairs, e.g. 'key1:secret1,key2:secret2'")
        pairs.append((key.strip(), secret.strip()))
    return tuple(pairs)


def _room_patterns(text: str) -> tuple[str, ...]:
    patterns = tuple(part.strip() for part in text.split(",") if part.strip())
    if not patterns:
        raise ValueError("expected room names or patterns, e.g. 'standup,team-*'")
    return patterns


def _optional_room_patterns(text: str) -> tuple[str, ...]:
    return _room_patterns(text) if text.strip() else ()


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def _ice_servers(text: str) -> tuple[dict[str, Any], ...]:
    """A JSON list of RTCIceServer objects, or comma-separated stun:/turn: URLs."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        servers = json.loads(text)
    else:
        servers = [{"urls": url.strip()} for url in text.split(",") if url.strip()]
    for server in servers:
        urls = server.get("urls") if isinstance(server, dict) else None
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES) for u in urls):
            raise ValueError(f"not an ICE server (stun:/turn: urls): {server!r}")
        if set(server) - {"urls", "username", "credential"}:
            raise ValueError(f"unknown ICE server fields in {server!r}")
    return tuple(servers)


def parse_origins(text: str) -> list[str] | str | None:
    """Turn ``CORS_ORIGINS`` into python-socketio's form: None (same origin), '*' or a list."""
    text = text.strip()
    if not text:
        return None
    if text == "*":
        return "*"
    return [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]


@dataclass(frozen=True)
class Settings:
    """The server's configuration; build it with :func:`load_settings`."""

    host: str = _setting("0.0.0.0", "HOST", "Interface to listen on.")
    port: int = _setting(8000, "PORT", "TCP port to listen on.", parse=int)
    log_level: str = _setting("info", "LOG_LEVEL", "Logging verbosity.", choices=LOG_LEVELS)
    log_format: str = _setting(
        "text",
        "LOG_FORMAT",
        "'text': one readable line per record; 'json': one JSON object per line (for log "
        "collectors).",
        choices=LOG_FORMATS,
    )
    cors_origins: str = _setting(
        "",
        "CORS_ORIGINS",
        "Comma-separated origins allowed to use the HTTP API and Socket.IO from other "
        "sites; '*' allows any origin; empty means same origin only.",
    )
    media: str = _setting(
        "relay",
        "MEDIA",
        "'relay': the server answers every offer with aiortc and fans media out to the "
        "room; 'p2p': offer/answer/ice are passed between browsers like the original "
        "zoom-clone server.",
        choices=MEDIA_MODES,
    )
    forwarding: str = _setting(
        "forward",
        "FORWARDING",
        "How relay mode feeds subscribers: 'forward' passes each publisher's encoded "
        "frames through without decoding (re-encoding only for a subscriber that lacks "
        "the publisher's codec); 'transcode' is the naive aiortc MediaRelay path, one "
        "encoder per subscriber, kept as a benchmark baseline.",
        choices=FORWARDING_MODES,
    )
    workers: int = _setting(
        1,
        "WORKERS",
        "Media worker processes for relay mode: each room's media runs in one of them "
        "(the least loaded when the room starts) while this process keeps every Socket.IO "
        "client; 0 means one per CPU core; 1 keeps everything in one process.",
        parse=_non_negative_int,
    )
    redis_url: str = _setting(
        "",
        "REDIS_URL",
        "Redis to form a cluster of roomrelay nodes (e.g. redis://redis:6379/0): Socket.IO "
        "emits, room membership, node heartbeats and room placement go through it, and each "
        "room's media runs on one node; empty runs this process alone, without Redis.",
        parse=_redis_url,
    )
    max_peers_per_room: int = _setting(
        16,
        "MAX_PEERS_PER_ROOM",
        "Participants allowed in one room; a join beyond it gets a 'room_full' error.",
        parse=_positive_int,
    )
    rate_limit: float = _setting(
        50.0,
        "RATE_LIMIT",
        "Sustained Socket.IO events per second allowed per connection.",
        parse=_positive_float,
    )
    rate_burst: int = _setting(
        200,
        "RATE_BURST",
        "Events a connection may send in a burst above the sustained rate.",
        parse=_positive_int,
    )
    max_connections: int = _setting(
        2000,
        "MAX_CONNECTIONS",
        "Socket.IO and /ws connections the server accepts at once; more are refused "
        "(HTTP 503) until some leave. 0: no limit.",
        parse=_non_negative_int,
    )
    max_streams: int = _setting(
        100,
        "MAX_STREAMS",
        "WebRTC streams opened with POST /webrtc/offer (the FastRTC API) that may exist at "
        "once; more are refused (HTTP 503). 0: no limit.",
        parse=_non_negative_int,
    )
    max_connections_per_ip: int = _setting(
        100,
        "MAX_CONNECTIONS_PER_IP",
        "Socket.IO connections one client address may hold at once; more are refused "
        "(HTTP 503). Behind a reverse proxy every client shares the proxy's address: "
        "raise it or use 0 (no limit).",
        parse=_non_negative_int,
    )
    max_trickled_candidates: int = _setting(
        64,
        "MAX_TRICKLED_CANDIDATES",
        "ICE candidates one connection may trickle ('ice' events) per minute; more get "
        "an 'invalid_candidate' error. Browsers send a handful per call.",
        parse=_positive_int,
    )
    allow_loopback_candidates: bool = _setting(
        False,
        "ALLOW_LOOPBACK_CANDIDATES",
        "Relay mode: accept ICE candidates on loopback addresses (127.0.0.0/8, ::1), for "
        "clients on the server's own loopback-only host. Off: such offers are refused, "
        "so clients cannot point the server's connectivity checks at its own host.",
        parse=_boolean,
    )
    ping_interval: float = _setting(
        4.0,
        "PING_INTERVAL",
        "Seconds between the server's engine.io pings to each client.",
        parse=_positive_float,
    )
    ping_timeout: float = _setting(
        5.0,
        "PING_TIMEOUT",
        "Seconds a client may take to answer a ping before it counts as gone (it leaves its "
        "room, and its media closes). A vanished client is gone within interval + 2 x "
        "timeout (engine.io checks every connection once per timeout).",
        parse=_positive_float,
    )
    require_nickname: bool = _setting(
        False,
        "REQUIRE_NICKNAME",
        "Refuse joins ('nickname_required') from connections that have not set a nickname "
        "(the zoom-clone 'nickname' event, or the join's nickname).",
        parse=_boolean,
    )
    allowed_hosts: tuple[str, ...] = _setting(
        (),
        "ALLOWED_HOSTS",
        "Comma-separated host names (with :port if not the default) the server answers to; "
        "requests with another Host header get 421. Protects against DNS rebinding. "
        "Empty: any host.",
        parse=_host_names,
    )
    max_queued_messages: int = _setting(
        1000,
        "MAX_QUEUED_MESSAGES",
        "Messages the server may hold for one connection that is not reading them; "
        "beyond this the connection is closed (with a 'too_slow' error), so a stuck "
        "client cannot grow the server's memory.",
        parse=_positive_int,
    )
    websocket_compression: bool = _setting(
        False,
        "WEBSOCKET_COMPRESSION",
        "Accept WebSocket permessage-deflate when clients offer it. Off: small signalling "
        "messages cost more CPU to compress than they save (Node's socket.io default too).",
        parse=_boolean,
    )
    media_timeout: float = _setting(
        30.0,
        "MEDIA_TIMEOUT",
        "Seconds a participant's media connection may take to connect (or stay "
        "disconnected) before the server closes it.",
        parse=_positive_float,
    )
    max_rooms: int = _setting(
        1000,
        "MAX_ROOMS",
        "Rooms that may exist at once; joining a new room beyond it gets 'too_many_rooms'. "
        "0: no cap.",
        parse=_non_negative_int,
    )
    max_participants: int = _setting(
        0,
        "MAX_PARTICIPANTS",
        "Participants in all rooms together; a join beyond it gets 'server_full'. "
        "0: no cap (MAX_CONNECTIONS still bounds it).",
        parse=_non_negative_int,
    )
    room_chat_rate: float = _setting(
        20.0,
        "ROOM_CHAT_RATE",
        "Chat messages per second one room accepts from all its members together (bursts "
        "of twice that); more get 'rate_limited'.",
        parse=_positive_float,
    )
    max_publish_kbps: int = _setting(
        8000,
        "MAX_PUBLISH_KBPS",
        "Relay mode: kbit/s one published track may use. Publishers are told (REMB) to stay "
        "under it and, when forwarding, packets beyond it are dropped. 0: no cap.",
        parse=_non_negative_int,
    )
    resume_grace: float = _setting(
        30.0,
        "RESUME_GRACE",
        "Seconds a native participant whose Socket.IO connection was lost (pings stopped) "
        "keeps its place, peer id and media for a reconnect with its resume token. "
        "0: leave at once.",
        parse=_non_negative_float,
    )
    busy_lag: float = _setting(
        1.0,
        "BUSY_LAG",
        "Seconds the event loop may run late (median over the last 5 s) before new joins are "
        "refused with server_busy. Calls in progress are never dropped for it.",
        parse=_positive_float,
    )
    ice_servers: tuple[dict[str, Any], ...] = _setting(
        (),
        "ICE_SERVERS",
        "STUN/TURN servers, as comma-separated stun:/turn: URLs or a JSON list of "
        "RTCIceServer objects (with username/credential for TURN). The server gathers its "
        "candidates with them and hands them to clients in the join ack. Empty: host "
        "candidates only, fine when clients can reach the server's address directly.",
        parse=_ice_servers,
    )
    turn_secret: str = _setting(
        "",
        "TURN_SECRET",
        "Shared secret of a TURN server using the TURN REST scheme (coturn: "
        "use-auth-secret, static-auth-secret). Each joining client then gets its own "
        "short-lived username/credential for the turn: URLs of --ice-servers, instead of "
        "static credentials.",
    )
    turn_ttl: float = _setting(
        86400.0,
        "TURN_TTL",
        "Seconds the TURN credentials made with --turn-secret stay valid.",
        parse=_positive_float,
    )
    tls_cert: Path | None = _setting(
        None,
        "TLS_CERT",
        "PEM certificate (chain) to serve HTTPS; browsers only allow camera and "
        "microphone on https:// pages (or localhost). Needs --tls-key.",
        parse=_optional_path,
    )
    tls_key: Path | None = _setting(
        None, "TLS_KEY", "PEM private key for --tls-cert.", parse=_optional_path
    )
    public_dir: Path | None = _setting(
        None,
        "PUBLIC_DIR",
        "Folder served at /public, e.g. an existing zoom-clone's src/public.",
        parse=_optional_path,
    )
    index: Path | None = _setting(
        None,
        "INDEX_FILE",
        "HTML file served at / instead of the bundled page, e.g. a zoom-clone's home page "
        "rendered to HTML.",
        parse=_optional_path,
    )
    static_dir: Path = _setting(
        DEFAULT_STATIC_DIR,
        "STATIC_DIR",
        "Folder of the bundled page (served at / and /static).",
        parse=Path,
    )
    client_dir: Path = _setting(
        DEFAULT_CLIENT_DIR,
        "SOCKETIO_CLIENT_DIR",
        "Folder holding the npm socket.io-client 4.x 'dist' bundle served at "
        "/socket.io/socket.io.js.",
        parse=Path,
    )
    segmentation_dir: Path = _setting(
        DEFAULT_SEGMENTATION_DIR,
        "SEGMENTATION_DIR",
        "Folder of the npm @mediapipe/selfie_segmentation package, served at "
        "/vendor/selfie_segmentation/ for the page's background blur (without it the "
        "page offers no blur).",
        parse=Path,
    )
    record_dir: Path | None = _setting(
        None,
        "RECORD_DIR",
        "Relay mode: record every participant's audio as a WAV file per participant and "
        "session, DIR/<room>/<date>-<nickname>-<peer>.wav (crash-safe, written as it "
        "arrives).",
        parse=_optional_path,
    )
    record_rooms: tuple[str, ...] = _setting(
        ("*",),
        "RECORD_ROOMS",
        "Which rooms --record-dir records: comma-separated room names or shell-style "
        "patterns ('standup', 'team-*'), case-sensitive.",
        parse=_room_patterns,
    )
    stt: bool = _setting(
        False,
        "STT",
        "Relay mode: live captions from an offline speech recognizer (PocketSphinx, "
        "English); rooms get 'transcript' events and GET /rooms/<room>/transcript.",
        parse=_boolean,
    )
    stt_rooms: tuple[str, ...] = _setting(
        ("*",),
        "STT_ROOMS",
        "Which rooms --stt captions: comma-separated room names or shell-style patterns, "
        "case-sensitive.",
        parse=_room_patterns,
    )
    stt_partials: bool = _setting(
        False,
        "STT_PARTIALS",
        "With --stt: also caption speech in progress about every second ('transcript' "
        "with final: false), replaced by the final caption. Roughly triples the "
        "recognizer's CPU.",
        parse=_boolean,
    )
    audio_consumers: tuple[str, ...] = _setting(
        (),
        "AUDIO_CONSUMERS",
        "Comma-separated 'module:Class' audio consumers of your own, created with no "
        "arguments (see README, Audio consumers).",
        parse=_import_paths,
    )
    tap_buffer_seconds: float = _setting(
        5.0,
        "TAP_BUFFER_SECONDS",
        "Audio a slow audio consumer may fall behind by before its oldest audio is "
        "dropped (and counted in /stats).",
        parse=_positive_float,
    )

    auth: str = _setting(
        "auto",
        "AUTH",
        "'open': anyone may join any room; 'token': joining needs an access token signed "
        "with an API secret (see README, Access control); 'auto': 'token' when an API key "
        "is set, else 'open'.",
        choices=AUTH_MODES,
    )
    api_key: str = _setting(
        "", "API_KEY", "Name of the API key that signs access tokens (their 'iss' claim)."
    )
    api_secret: str = _setting(
        "",
        "API_SECRET",
        "Secret of --api-key (HS256; at least 32 characters). Prefer the environment "
        "variable: command lines are visible to other users of the machine.",
    )
    api_keys: tuple[tuple[str, str], ...] = _setting(
        (),
        "API_KEYS",
        "More API keys, as 'key1:secret1,key2:secret2' (to rotate keys, or one per "
        "application); tokens signed with any of them are accepted.",
        parse=_api_keys,
    )
    open_rooms: tuple[str, ...] = _setting(
        (),
        "OPEN_ROOMS",
        "With --auth token: rooms anyone may join without a token (comma-separated names "
        "or shell-style patterns, case-sensitive), e.g. for zoom-clone clients, which "
        "cannot send one. Open rooms are listed publicly.",
        parse=_optional_room_patterns,
    )
    first_is_host: bool = _setting(
        False,
        "FIRST_IS_HOST",
        "The earliest participant still in a room may moderate it (mute, remove, lock, end) "
        "without an admin token; the role passes on when they leave.",
        parse=_boolean,
    )
    webhook_url: str = _setting(
        "",
        "WEBHOOK_URL",
        "POST room_started, room_finished, participant_joined, participant_left, "
        "track_published and recording_finished events to this URL, signed with the first "
        "API key (see README, Webhooks); retried with backoff.",
    )
    metrics_port: int | None = _setting(
        None,
        "METRICS_PORT",
        "Serve GET /metrics (Prometheus) on this port only, instead of on --port; "
        "0 or empty: on --port.",
        parse=_optional_port,
    )
    metrics_host: str = _setting(
        "",
        "METRICS_HOST",
        "Interface for --metrics-port (e.g. 127.0.0.1 or a private address); empty: --host.",
    )


SETTINGS_SPEC = tuple(fields(Settings))


def _shown(default: Any) -> str:
    """A default as one would type it: lists comma-separated."""
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    return str(default)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _converter(spec_field: Any) -> Callable[[str], Any]:
    parse = spec_field.metadata["parse"]
    return parse if parse is not None else str


def build_parser() -> argparse.ArgumentParser:
    """CLI flags for every setting; each help text names the environment fallback."""
    parser = argparse.ArgumentParser(
        prog="roomrelay",
        description="Socket.IO-compatible WebRTC room server (zoom-clone compatible).",
    )
    for spec_field in SETTINGS_SPEC:
        meta = spec_field.metadata
        kwargs: dict[str, Any] = {
            "dest": spec_field.name,
            "default": argparse.SUPPRESS,
            "help": f"{meta['help']} [env {meta['env']}; default: {_shown(spec_field.default)}]",
        }
        if meta["parse"] is _boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _converter(spec_field)
            kwargs["metavar"] = meta["env"]
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
                kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        parser.add_argument(_flag(spec_field.name), **kwargs)
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from CLI flags, falling back to environment variables, then defaults."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    namespace = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    for spec_field in SETTINGS_SPEC:
        meta = spec_field.metadata
        if spec_field.name in namespace:
            values[spec_field.name] = namespace[spec_field.name]
            continue
        raw = environ.get(meta["env"])
        if raw is None:
            continue
        try:
            value = _converter(spec_field)(raw)
        except ValueError as exc:
            parser.error(f"environment variable {meta['env']}: {exc}")
        if meta["choices"] and value not in meta["choices"]:
            parser.error(
                f"environment variable {meta['env']}: {value!r} is not one of "
                f"{', '.join(meta['choices'])}"
            )
        values[spec_field.name] = value
    return Settings(**values)

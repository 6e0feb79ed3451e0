"""The JSON HTTP endpoints: ``/health``, ``/rooms``, ``/stats`` and room transcripts."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from . import __version__, validation
from .access import AccessError
from .audio.recorder import safe_name
from .cluster.forward import forward_get, owner_url
from .cluster.setup import cluster_facts
from .context import SERVER_KEY, RoomServer
from .grants import Grant


def process_facts() -> dict[str, Any]:
    """Resource use of this process, for spotting leaks from the outside."""
    rss = None
    try:
        statm = Path("/proc/self/statm").read_text()
        rss = int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    tasks = asyncio.all_tasks()
    return {
        "tasks": len(tasks),
        "tasks_by_coroutine": dict(
            Counter(getattr(task.get_coro(), "__qualname__", "?") for task in tasks)
        ),
        "threads": threading.active_count(),
        "rss_bytes": rss,
    }


def signaling_facts(server: RoomServer) -> dict[str, Any]:
    """How the Socket.IO fan-out copes: room lists sent, slow readers cut off."""
    manager = server.sio.manager
    return {
        "room_lists_sent": server.membership.room_list.lists_sent,
        "room_list_followers": server.membership.room_list.follower_count(),
        "max_queued_messages": getattr(manager, "max_queued", None),
        "slow_readers_disconnected": getattr(manager, "slow_readers_disconnected", 0),
    }


def describe_room(server: RoomServer, name: str) -> dict[str, Any]:
    members = server.roster.visible_members(name)
    return {
        "name": name,
        "participants": len(members),
        "nicknames": [p.nickname for p in members],
        "peers": [
            {**p.describe(), "dialect": p.dialect.value if p.dialect else None} for p in members
        ],
        "media": server.media.room_stats(name),
        "recording": server.audio.is_recording(name),
    }


async def health(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(server.stats.uptime, 3),
            "media": server.media.mode,
            "socketio_client": server.client_version,
            **({"cluster": cluster_facts(server.cluster)} if server.cluster else {}),
        }
    )


def http_error(error: type[web.HTTPError], code: str, message: str) -> web.HTTPError:
    """An HTTP error with the same ``{error, message}`` body as every other refusal."""
    return error(
        text=json.dumps({"error": code, "message": message}), content_type="application/json"
    )


def request_grant(request: web.Request) -> Grant:
    """The requester's grant (Bearer token or ``?token=``); 401 for a refused token."""
    server = request.app[SERVER_KEY]
    try:
        return server.access.request_grant(request.headers, request.query)
    except AccessError as refused:
        server.stats.count_error(refused.code)
        raise http_error(web.HTTPUnauthorized, refused.code, refused.message) from None


async def rooms(request: web.Request) -> web.Response:
    """The rooms the requester may see (all on an open server)."""
    server = request.app[SERVER_KEY]
    visible = server.access.visible_rooms(request_grant(request), server.roster.public_rooms())
    return web.json_response({"rooms": [describe_room(server, name) for name in visible]})


async def stats(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    counters = server.stats
    room_names = server.roster.public_rooms()
    latency = server.media.forward_latency()  # changes with every packet: not in "media"
    return web.json_response(
        {
            "uptime_s": round(counters.uptime, 3),
            "connections": len(server.roster),
            "connections_total": counters.connections_total,
            "rooms": len(room_names),
            "participants": sum(server.roster.count(name) for name in room_names),
            "events_total": counters.events_total,
            "events_by_name": dict(counters.events_by_name),
            "errors_total": counters.errors_total,
            "errors_by_code": dict(counters.errors_by_code),
            "signaling": signaling_facts(server),
            "media": server.media.stats(),
            "loop_lag": server.loop_lag.stats(),
            "gc": server.gc_pacer.stats(),
            "resumptions": server.membership.resumptions.stats(),
            "room_limits": {
                "max_rooms": server.roster.limits.max_rooms,
                "max_participants": server.roster.limits.max_participants,
                "chat_refused": server.roster.limits.chat_refused,
            },
            "moderation_actions": dict(counters.moderation_actions),
            "webhooks": server.webhooks.report() if server.webhooks else None,
            "forward_latency": latency.summary() if latency else None,
            "admission": {
                **server.sio.admission.stats(),
                "malformed_disconnects": server.sio.malformed_disconnects,
            },
            "process": process_facts(),
            **({"cluster": cluster_facts(server.cluster)} if server.cluster else {}),
        }
    )


async def transcript(request: web.Request) -> web.StreamResponse:
    """A room's captions so far: JSON entries, or ``?format=text`` as a download."""
    server = request.app[SERVER_KEY]
    try:
        room = validation.room_name(request.match_info["room"])
    except validation.ProtocolError as error:
        return web.json_response({"error": error.code, "message": error.message}, status=400)
    if not server.access.may_see(request_grant(request), room):
        raise http_error(
            web.HTTPForbidden, "forbidden", f"your access token does not cover room {room!r}"
        )
    if server.cluster is not None and server.media.mode == "relay":
        # Captions live on the node that runs the room's media.
        owner = owner_url(server.cluster, server.media.room_stats(room).get("node"), request)
        if owner is not None:
            return await forward_get(request, owner)
    store = server.audio.transcripts
    if request.query.get("format") == "text":
        filename = safe_name(room) + "-transcript.txt"
        return web.Response(
            text=store.as_text(room),
            content_type="text/plain",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return web.json_response({"room": room, "entries": store.entries(room)})


def api_routes() -> list[web.RouteDef]:
    return [
        web.get("/health", health),
        web.get("/rooms", rooms),
        web.get("/rooms/{room}/transcript", transcript),
        web.get("/stats", stats),
    ]

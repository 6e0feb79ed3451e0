"""The JSON HTTP endpoints: ``/health``, ``/rooms`` and ``/stats``."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from . import __version__, validation
from .audio.recorder import safe_name
from .context import SERVER_KEY, RoomServer


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


def describe_room(server: RoomServer, name: str) -> dict[str, Any]:
    members = server.roster.members(name)
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
        }
    )


async def rooms(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    return web.json_response(
        {"rooms": [describe_room(server, name) for name in server.roster.public_rooms()]}
    )


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
            "media": server.media.stats(),
            "forward_latency": latency.summary() if latency else None,
            "process": process_facts(),
        }
    )


async def transcript(request: web.Request) -> web.StreamResponse:
    """A room's captions so far: JSON entries, or ``?format=text`` as a download."""
    server = request.app[SERVER_KEY]
    try:
        room = validation.room_name(request.match_info["room"])
    except validation.ProtocolError as error:
        return web.json_response({"error": error.code, "message": error.message}, status=400)
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

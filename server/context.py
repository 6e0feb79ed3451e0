"""The running server's parts, shared by the HTTP handlers through the aiohttp app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .access import AccessControl
from .audio.hub import AudioHub
from .backends import MediaBackend
from .cluster.node import ClusterNode
from .gc_pacing import GcPacer
from .loop_health import LoopLag
from .membership import Membership
from .rooms import Roster
from .socket_server import SocketServer
from .stats import Stats
from .webhooks import Webhooks


@dataclass
class RoomServer:
    """What the HTTP endpoints read from a running roomrelay instance."""

    sio: SocketServer
    roster: Roster
    membership: Membership
    stats: Stats
    media: MediaBackend
    audio: AudioHub
    loop_lag: LoopLag
    gc_pacer: GcPacer
    client_version: str
    access: AccessControl
    webhooks: Webhooks | None = None
    cluster: ClusterNode | None = None  # with REDIS_URL


SERVER_KEY = web.AppKey("roomrelay", RoomServer)

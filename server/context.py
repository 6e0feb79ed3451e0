"""The running server's parts, shared by the HTTP handlers through the aiohttp app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .audio.hub import AudioHub
from .events import EventRouter
from .media.backend import MediaBackend
from .membership import Membership
from .rooms import Roster
from .settings import Settings
from .socket_server import SocketServer
from .stats import Stats


@dataclass
class RoomServer:
    """Everything one roomrelay instance is made of."""

    settings: Settings
    sio: SocketServer
    roster: Roster
    stats: Stats
    media: MediaBackend
    audio: AudioHub
    membership: Membership
    router: EventRouter
    client_version: str


SERVER_KEY = web.AppKey("roomrelay", RoomServer)

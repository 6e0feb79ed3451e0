"""A cluster node's wiring, from the settings: the node, its roster view, its media."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web
from redis.exceptions import RedisError

from ..backends.relay import MediaFactory
from ..membership import Membership
from ..moderation import Moderation
from ..rooms import DEFAULT_NICKNAME, Dialect, Roster
from ..settings import Settings
from .handover import PlaceHandover
from .media import ClusterSfu, CoreFactory
from .members import MODERATE, OUTSIDE, ROOM_ACTION, RemoteParticipant, local_records, record
from .node import ClusterNode

logger = logging.getLogger(__name__)

MediaWrapper = Callable[[CoreFactory], MediaFactory]

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
# Seconds a stopping node gives its hand-over, and leaving the cluster (Redis may be away).
DRAIN_SECONDS = 5.0
LEAVE_SECONDS = 3.0
NODE_LOST = "node_lost"  # user_left's reason for the participants of a node that is gone


def node_url(settings: Settings) -> str:
    """How other nodes and operators reach this node (shown in /health and /stats)."""
    host = settings.host if settings.host not in WILDCARD_HOSTS else socket.gethostname()
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.port}"


def create_cluster(settings: Settings, roster: Roster) -> ClusterNode:
    """This node, with the roster seeing every node's participants."""
    node = ClusterNode(
        settings.redis_url,
        node_url(settings),
        lambda: local_records(roster),
        lambda room: [record(p) for p in roster.local_members(room)],
    )
    node.rate = (settings.rate_limit, settings.rate_burst)  # for other nodes' participants
    roster.others = node.members

    def signaling() -> dict[str, Any]:
        rooms = roster.local_rooms()
        return {
            "connections": len(roster),
            "participants": sum(len(roster.local_members(room)) for room in rooms),
            "member_rooms": rooms,
        }

    async def deliver_outside(message: dict[str, Any]) -> None:
        """Another node's event for this node's members outside Socket.IO (/ws, WHIP)."""
        dialect = Dialect(message["dialect"])
        data = tuple(message["data"]) if message.get("several") else message["data"]
        skip = message.get("skip")
        for member in roster.local_members(str(message["room"])):
            if member.outbox is not None and member.dialect is dialect and member.sid != skip:
                await member.outbox.deliver(str(message["event"]), data)

    node.reporters.append(signaling)
    node.handlers[OUTSIDE] = deliver_outside
    return node


def cluster_media(node: ClusterNode | None, roster: Roster) -> MediaWrapper | None:
    """Wraps a media core factory (in-process SFU or media workers) for the cluster."""
    if node is None:
        return None
    rate = node.rate

    def nickname_of(peer_id: str) -> str:
        participant = roster.by_peer_id(peer_id)
        return participant.nickname if participant else DEFAULT_NICKNAME

    def wrap(core: CoreFactory) -> MediaFactory:
        return lambda listener: ClusterSfu(node, listener, core, nickname_of, rate)

    return wrap


def run_cluster(
    app: web.Application,
    node: ClusterNode | None,
    sio: socketio.AsyncServer,
    roster: Roster,
    membership: Membership,
    moderation: Moderation,
) -> None:
    """Join the cluster when the server starts; leave it when it stops."""
    if node is None:
        return

    def other_nodes_changed() -> None:
        asyncio.get_running_loop().create_task(membership.broadcast_room_list())

    async def room_action(message: dict[str, Any]) -> None:
        """A host on another node ended (its members heard ``room_ended``) or locked a room."""
        room = str(message["room"])
        if message["action"] == "end":
            await moderation.end_here(room)
        elif message["action"] == "lock":
            moderation.lock_here(room, bool(message["locked"]))

    async def moderate(message: dict[str, Any]) -> None:
        """A host on another node acts on one of this node's participants."""
        target = roster.by_peer_id(str(message["peer_id"]))
        room = str(message["room"])
        if target is None or target.room != room:
            return  # gone meanwhile
        if message["action"] == "mute":
            await moderation.mute(
                room, target, message["media"], bool(message["muted"]), message["by"]
            )
        elif message["action"] == "remove":
            await moderation.remove(room, target, str(message["by"]), str(message["reason"]))

    node.handlers[ROOM_ACTION] = room_action
    node.handlers[MODERATE] = moderate
    PlaceHandover(node, roster, membership.resumptions)  # resume tokens work on every node

    async def gone(participant: RemoteParticipant) -> None:
        if participant.room is not None:
            await membership.announce_leave(participant, participant.room, NODE_LOST, local=True)

    async def join(app: web.Application) -> None:
        if not sio.manager_initialized:
            # python-socketio subscribes to Redis at its first connection; other nodes'
            # emits (to this node's first clients) must not be missed meanwhile.
            sio.manager_initialized = True
            sio.manager.initialize()
        node.members.on_change = other_nodes_changed
        node.participant_gone = gone
        await node.start()

    async def drain(app: web.Application) -> None:
        try:
            await asyncio.wait_for(node.drain(), DRAIN_SECONDS)
        except (TimeoutError, RedisError, OSError) as exc:
            logger.warning("could not hand every room over before stopping (%r)", exc)

    async def leave(app: web.Application) -> None:
        try:
            await asyncio.wait_for(node.close(), LEAVE_SECONDS)
        except TimeoutError:
            logger.warning("leaving the cluster took over %.0f s; stopping anyway", LEAVE_SECONDS)

    app.on_startup.append(join)
    app.on_shutdown.append(drain)  # before the server's own goodbyes (added later)
    app.on_cleanup.append(leave)


def cluster_facts(node: ClusterNode) -> dict[str, Any]:
    """Every live node, as ``/health`` and ``/stats`` show them."""
    nodes = [
        {
            "id": doc.get("id"),
            "url": doc.get("url"),
            "pid": doc.get("pid"),
            "connections": doc.get("connections", 0),
            "participants": doc.get("participants", 0),
            "media_load": doc.get("load", 0),
            "media_rooms": sorted(doc.get("rooms", {})),
            "draining": bool(doc.get("draining")),
            "this": doc.get("id") == node.id,
        }
        for doc in node.live_nodes()
    ]
    return {
        "node": node.id,
        "redis": "ok" if node.redis_ok else "unreachable",
        "nodes": nodes,
        "connections": sum(n["connections"] for n in nodes),
    }

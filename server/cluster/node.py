"""This node's place in the cluster: heartbeats, the view of live nodes, room placement.

Redis keys (all with expiries, so that nothing outlives the node that wrote it):

- ``roomrelay:node:{id}``: the node's heartbeat (its URL, pid, load, the reports of
  the rooms whose media it owns), rewritten every ``HEARTBEAT_SECONDS``;
- ``roomrelay:members:{id}``: its participants by room (see members.py);
- ``roomrelay:room:{name}:owner``: the node that owns the room's media, set only
  if absent (first join) or when the owner is gone, refreshed by the owner's
  heartbeat; the set ``roomrelay:nodes`` lists the ids to look up.

A node counts as gone when its heartbeat is missing from ``MISSES_BEFORE_GONE``
views in a row. Right after Redis comes back (restarted, empty) nobody is judged
for ``OUTAGE_GRACE_SECONDS``: every node writes its keys again meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ..media.types import Kind, RateGate, SlotPolicy
from ..tasks import cancel_and_wait
from .bus import PREFIX, Bus, Message
from .members import MemberMirror, MemberRecord, RemoteParticipant, RoomRecords

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 0.5
NODE_TTL_MS = 2000
PLACEMENT_TTL_MS = 2000
MISSES_BEFORE_GONE = 2
OUTAGE_GRACE_SECONDS = 2.0
# Ids of nodes whose heartbeat has been missing this long are dropped from the set.
FORGET_AFTER_MISSES = 120
NODES_KEY = f"{PREFIX}:nodes"

# Take a room's ownership for ARGV[2] if it has no owner or its owner is ARGV[1].
CLAIM = """
local owner = redis.call('get', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return owner
"""
# The owner's heartbeat: keep the room (or take it again after a Redis restart).
REFRESH = """
local owner = redis.call('get', KEYS[1])
if owner == false then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if owner == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return owner
"""


def node_key(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


def members_key(node_id: str) -> str:
    return f"{PREFIX}:members:{node_id}"


def owner_key(room: str) -> str:
    return f"{PREFIX}:room:{room}:owner"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Reporter = Callable[[], dict[str, Any]]


async def _nobody_to_tell(participant: RemoteParticipant) -> None:
    return None


class MediaHome(Protocol):
    """This node's side of its participants' media (cluster/media.py), for a resume that
    moves a participant's Socket.IO connection between nodes (cluster/handover.py)."""

    def adopt(
        self,
        room: str,
        peer_id: str,
        policy: SlotPolicy,
        rate_gate: RateGate,
        *,
        may_send_data: bool,
        muted: set[Kind],
    ) -> None: ...

    def give_up(self, room: str, peer_id: str) -> None: ...


class ClusterNode:
    """One roomrelay process in a cluster sharing ``redis_url``."""

    def __init__(
        self,
        redis_url: str,
        url: str,
        local_records: Callable[[], RoomRecords],
        room_records: Callable[[str], list[MemberRecord]],
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.url = url
        self.started = time.time()
        self.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.bus = Bus(redis_url, self.id, self._on_message)
        self.bus.resubscribed = self._after_outage
        self.members = MemberMirror(self.id, self._publish_room, self.bus.send)
        self._local_records = local_records
        self._room_records = room_records
        self._written_version = -1  # the member list in Redis is this version's
        self._written_rooms = b""
        self._version = 0
        self.nodes: dict[str, dict[str, Any]] = {}  # heartbeats of the live nodes, self too
        self._misses: dict[str, int] = {}  # nodes seen before whose heartbeat is missing
        self._judge_after = 0.0  # monotonic time from which missing heartbeats count
        self.draining = False
        self.redis_ok = False
        self.reporters: list[Reporter] = []  # parts of this node's heartbeat
        self.after_beat: list[Callable[[], Awaitable[None]]] = []  # checks on the new view
        self.on_drain: list[Callable[[], Awaitable[None]]] = []  # before the node stops
        self.handlers: dict[str, Callable[[Message], Awaitable[None]]] = {
            "members": self._on_members
        }
        self._task: asyncio.Task[None] | None = None
        self._beating = asyncio.Lock()
        self._redis_failing = False
        self.rate: tuple[float, int] = (50.0, 100)  # data channel limits of remote participants
        self.media_home: MediaHome | None = None  # relay mode: this node's side of room media
        # Tells this node's members that a participant of a node that is gone left.
        self.participant_gone: Callable[[RemoteParticipant], Awaitable[None]] = _nobody_to_tell

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        await self.beat()
        self._task = asyncio.create_task(self._beat_forever())
        logger.info(
            "cluster node %s (%s) joined, %d node(s) live", self.id, self.url, len(self.nodes)
        )

    async def close(self) -> None:
        """Leave the cluster: stop beating and remove this node's keys."""
        await cancel_and_wait(self._task)
        await self.bus.flush()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(node_key(self.id), members_key(self.id))
            await self.redis.srem(NODES_KEY, self.id)
        await self.bus.close()
        await self.redis.aclose()

    # -- the view ------------------------------------------------------------------------

    def alive(self, node_id: str) -> bool:
        """False only for a node judged gone: one not seen yet (it may have started after
        this node's last view) counts as alive."""
        if node_id == self.id or node_id in self.nodes:
            return True
        return self._misses.get(node_id, 0) < MISSES_BEFORE_GONE

    def live_nodes(self) -> list[dict[str, Any]]:
        return [self.nodes[n] for n in sorted(self.nodes)]

    def report_of(self, node_id: str) -> dict[str, Any]:
        return self.nodes.get(node_id, {})

    def least_loaded(self) -> str:
        """The live node (not draining) with the fewest participants on its media; this
        node on a tie."""
        return self.least_loaded_other(exclude=None) or self.id

    def least_loaded_other(self, exclude: str | None) -> str | None:
        candidates = [
            doc
            for doc in self.nodes.values()
            if not doc.get("draining") and doc.get("id") and doc["id"] != exclude
        ]
        if not candidates:
            return None
        best = min(candidates, key=lambda d: (int(d.get("load", 0)), d["id"] != self.id, d["id"]))
        return str(best["id"])

    # -- heartbeats ------------------------------------------------------------------------

    def _heartbeat(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "pid": os.getpid(),
            "started": self.started,
            "draining": self.draining,
            "members_version": self._version,
        }
        for reporter in self.reporters:
            doc.update(reporter())
        return doc

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.beat()
            except Exception:
                logger.exception("cluster heartbeat failed")

    async def beat(self) -> None:
        """Write this node's keys, read everyone's, and run the checks on the new view."""
        async with self._beating:  # one at a time (the loop, a drain, after an outage)
            await self._beat()

    async def _beat(self) -> None:
        rooms = orjson.dumps(self._local_records())
        if rooms != self._written_rooms:
            # A new version for every new list: a nickname or media state may have changed
            # without a room message, and readers fetch the list only for a new version.
            self._version += 1
        doc = self._heartbeat()
        version = self._version
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(node_key(self.id), orjson.dumps(doc), px=NODE_TTL_MS)
                pipe.sadd(NODES_KEY, self.id)
                pipe.smembers(NODES_KEY)
                if version != self._written_version:  # the whole list only when it changed
                    members = b'{"version":%d,"rooms":%s}' % (version, rooms)
                    pipe.set(members_key(self.id), members, px=NODE_TTL_MS)
                else:
                    pipe.pexpire(members_key(self.id), NODE_TTL_MS)
                results = await pipe.execute()
            # Written, or still there (a restarted Redis has lost it: write it next time).
            self._written_version = version if results[3] else -1
            self._written_rooms = rooms
            # Nodes known here too: a restarted Redis has lost the set.
            ids = sorted({*(_text(i) for i in results[2]), *self.nodes, *self._misses})
            heartbeats = await self.redis.mget([node_key(i) for i in ids])
            changed = [
                node_id
                for node_id, heartbeat in zip(ids, heartbeats, strict=True)
                if heartbeat is not None
                and node_id != self.id
                and orjson.loads(heartbeat).get("members_version", 0)
                > self.members.version_of(node_id)
            ]
            member_docs = dict(
                zip(changed, await self.redis.mget([members_key(i) for i in changed]), strict=True)
                if changed
                else []
            )
        except (RedisError, OSError) as exc:
            if not self._redis_failing:
                logger.warning("cluster: Redis unreachable (%s); keeping the last view", exc)
            self._redis_failing, self.redis_ok = True, False
            return
        if self._redis_failing:
            logger.info("cluster: Redis reachable again")
            self._judge_after = time.monotonic() + OUTAGE_GRACE_SECONDS
            self.members.forget_versions()
        self._redis_failing, self.redis_ok = False, True
        await self._update_view(ids, heartbeats, [member_docs.get(i) for i in ids])
        for check in self.after_beat:
            try:
                await check()
            except (RedisError, OSError) as exc:
                logger.warning("cluster check failed (Redis: %s)", exc)

    async def _update_view(
        self, ids: list[str], heartbeats: list[Any], member_docs: list[Any]
    ) -> None:
        nodes: dict[str, dict[str, Any]] = {}
        forget = []
        for node_id, heartbeat, member_doc in zip(ids, heartbeats, member_docs, strict=True):
            if heartbeat is None:
                judging = time.monotonic() >= self._judge_after
                self._misses[node_id] = self._misses.get(node_id, 0) + (1 if judging else 0)
                if self._misses[node_id] >= FORGET_AFTER_MISSES:
                    forget.append(node_id)
                continue
            self._misses.pop(node_id, None)
            nodes[node_id] = orjson.loads(heartbeat)
            if member_doc is not None and node_id != self.id:
                doc = orjson.loads(member_doc)
                self.members.apply_all(node_id, int(doc["version"]), doc["rooms"])
        for node_id in set(self.nodes) - set(nodes):
            logger.info("cluster node %s missed its heartbeat", node_id)
        self.nodes = nodes
        gone = self.members.keep_only(n for n in {*ids, *self._misses} if self.alive(n))
        if gone:
            logger.warning("cluster: %d participant(s) of a node that is gone dropped", len(gone))
        for participant in gone:
            await self.participant_gone(participant)
        if forget:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.srem(NODES_KEY, *forget)
            for node_id in forget:
                self._misses.pop(node_id, None)

    def _after_outage(self) -> None:
        """The bus is back after losing Redis: rewrite this node's keys at once."""
        self._judge_after = time.monotonic() + OUTAGE_GRACE_SECONDS
        self.members.forget_versions()
        asyncio.get_running_loop().create_task(self.beat())

    # -- membership ------------------------------------------------------------------------

    async def _publish_room(self, room: str) -> None:
        """This node's members of ``room`` changed: tell everyone now."""
        self._version += 1
        records = self._room_records(room)
        await self.bus.send_all(
            {
                "kind": "members",
                "node": self.id,
                "version": self._version,
                "room": room,
                "members": records,
            }
        )

    async def _on_members(self, message: Message) -> None:
        self.members.apply_room(
            str(message["node"]), int(message["version"]), str(message["room"]), message["members"]
        )

    async def _on_message(self, message: Message) -> None:
        handler = self.handlers.get(str(message.get("kind")))
        if handler is None:
            logger.warning("ignoring a cluster message of kind %r", message.get("kind"))
            return
        await handler(message)

    # -- placement ---------------------------------------------------------------------------

    async def owner_of(self, room: str) -> str | None:
        owner = await self.redis.get(owner_key(room))
        return _text(owner) if owner is not None else None

    async def place(self, room: str) -> str:
        """The node that owns ``room``'s media: its live owner, or a new one."""
        owner = await self.owner_of(room)
        if owner is not None and self.alive(owner):
            return owner
        return await self.claim(room, replacing=owner or "")

    async def claim(self, room: str, *, replacing: str) -> str:
        """Give ``room`` to the least-loaded node unless someone else already took it over."""
        result = await self.redis.eval(
            CLAIM, 1, owner_key(room), replacing, self.least_loaded(), PLACEMENT_TTL_MS
        )
        return _text(result)

    async def refresh(self, rooms: list[str]) -> dict[str, str]:
        """Keep this node's rooms; returns each room's owner (another one if it was lost)."""
        if not rooms:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.eval(REFRESH, 1, owner_key(room), self.id, PLACEMENT_TTL_MS)
            owners = await pipe.execute()
        return {room: _text(owner) for room, owner in zip(rooms, owners, strict=True)}

    async def drain(self) -> None:
        """Stop taking rooms (the next views of every node leave this one out), and hand
        the rooms it runs to other nodes."""
        self.draining = True
        await self.beat()
        for hand_over_rooms in self.on_drain:
            await hand_over_rooms()

    async def hand_over(self, room: str, target: str) -> str:
        """Give one of this node's rooms to ``target``; returns the room's owner now."""
        return _text(
            await self.redis.eval(CLAIM, 1, owner_key(room), self.id, target, PLACEMENT_TTL_MS)
        )

    async def release(self, room: str) -> None:
        """This node's room emptied: let the next first join place it anew."""
        with contextlib.suppress(RedisError, OSError):
            await self.redis.eval(
                "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end",
                1,
                owner_key(room),
                self.id,
            )

"""Each room's media on one node of the cluster; commands routed there, facts routed back.

:class:`ClusterSfu` stands where the SFU stands in the relay backend. A room is
placed on a node when its first participant joins (the least-loaded live node,
see node.py); a participant's node (its *home*, where its Socket.IO connection
is) sends the room's owner the same commands a front sends a media worker (join,
offer, ice, ...) over the bus, and the owner's media core runs them and sends
what it reports about that participant (answer, tracks, errors) back to the
home, whose relay backend tells the client. Rooms owned by this node go straight
to the local core (an in-process SFU or media workers), as without a cluster.

When an owner is gone (its heartbeat stopped) or lost its placement, each home
places the room again, registers its participants on the new owner (with their
host mutes) and tells their clients to connect their media again
(``media_closed`` / a fresh ``welcome``), as when a media worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from ..backends.relay import MediaCore
from ..media.latency import LatencyHistogram
from ..media.offer import ParsedOffer
from ..media.types import (
    KINDS,
    CloseReason,
    Kind,
    MediaListener,
    RateGate,
    SlotInfo,
    SlotPolicy,
    UplinkQuality,
)
from ..ratelimit import TokenBucket
from ..validation import IceCandidate, ProtocolError, ice_candidate
from ..workers import wire
from ..workers.remote import Member
from .bus import Message
from .node import ClusterNode

logger = logging.getLogger(__name__)

CoreFactory = Callable[[MediaListener], MediaCore]


class ClusterSfu:
    """The relay backend's media core on a cluster node."""

    def __init__(
        self,
        node: ClusterNode,
        listener: MediaListener,
        core: CoreFactory,
        nickname_of: Callable[[str], str],
        rate: tuple[float, int],
    ) -> None:
        self._node = node
        self._listener = listener
        self._core = core(_OwnerSide(self))
        self.config = self._core.config
        self._nickname_of = nickname_of
        self._rate = rate
        # Home side: this node's participants by room, and who owns each of those rooms.
        self._members: dict[str, dict[str, Member]] = {}
        self._gates: dict[str, RateGate] = {}
        self._owners: dict[str, str] = {}
        self._waiting: dict[str, list[Message]] = {}  # commands held while a room is placed
        # Owner side: the participants on this node's core, with their home node.
        self._homes: dict[str, dict[str, str]] = {}
        self.moved_rooms = 0
        node.media_home = self
        node.handlers["command"] = self._on_command
        node.handlers["fact"] = self._on_fact
        node.reporters.append(self.report)
        node.after_beat.append(self.check_rooms)
        node.on_drain.append(self.drain)

    # -- routing ---------------------------------------------------------------------------

    def _owner(self, room: str) -> str:
        owner = self._owners.get(room)
        if owner is None:
            raise ProtocolError("not_in_room", "join a room first")
        return owner

    def _route(self, room: str, command: Message) -> bool:
        """Send ``command`` to the room's owner; True when the owner is this node (the
        caller runs it here)."""
        if room in self._waiting:
            self._waiting[room].append(command)
            return False
        owner = self._owner(room)
        if owner == self._node.id:
            return True
        self._node.bus.send(owner, {"kind": "command", "home": self._node.id, **command})
        return False

    async def _place(self, room: str) -> None:
        """Find (or choose) the room's owner, then send what waited for it."""
        try:
            owner = await self._node.place(room)
        except Exception as exc:
            logger.warning("placing room %r failed (%s); its media waits for Redis", room, exc)
            await asyncio.sleep(0.5)
            asyncio.get_running_loop().create_task(self._place(room))
            return
        if not self._members.get(room):
            self._waiting.pop(room, None)
            return  # everyone left meanwhile
        self._owners[room] = owner
        logger.info("room %r: media on node %s", room, owner)
        # Commands arriving meanwhile still queue behind these: the room leaves _waiting last.
        waiting = self._waiting.get(room, [])
        while waiting:
            command = waiting.pop(0)
            if owner != self._node.id:
                self._node.bus.send(owner, {"kind": "command", "home": self._node.id, **command})
                continue
            try:
                await self._run_here(command, self._node.id)
            except ProtocolError as error:
                await self._listener.error(str(command["peer_id"]), command["op"], error)
        self._waiting.pop(room, None)

    # -- the Sfu's interface (home side) --------------------------------------------------------

    def join(
        self,
        room: str,
        peer_id: str,
        policy: SlotPolicy,
        rate_gate: RateGate,
        *,
        may_send_data: bool = True,
    ) -> None:
        member = Member(policy, self._nickname_of(peer_id), may_send_data)
        self._add_member(room, peer_id, member, rate_gate, _join_command(room, peer_id, member))

    def adopt(
        self,
        room: str,
        peer_id: str,
        policy: SlotPolicy,
        rate_gate: RateGate,
        *,
        may_send_data: bool,
        muted: set[Kind],
    ) -> None:
        """A participant of another node resumed its Socket.IO connection on this one: its
        media stays where it is and its facts now come here (cluster/handover.py)."""
        member = Member(policy, self._nickname_of(peer_id), may_send_data, set(muted))
        command = {**_join_command(room, peer_id, member), "rehome": True}
        self._add_member(room, peer_id, member, rate_gate, command)

    def give_up(self, room: str, peer_id: str) -> None:
        """Forget a participant that resumed on another node, without a leave: its media
        carries on (the new home re-homes it with the owner)."""
        members = self._members.get(room, {})
        if members.pop(peer_id, None) is None:
            return
        self._gates.pop(peer_id, None)
        if not members:
            self._members.pop(room, None)
            self._owners.pop(room, None)

    def _add_member(
        self, room: str, peer_id: str, member: Member, rate_gate: RateGate, command: Message
    ) -> None:
        self._members.setdefault(room, {})[peer_id] = member
        self._gates[peer_id] = rate_gate
        if room not in self._owners and room not in self._waiting:
            self._waiting[room] = []
            asyncio.get_running_loop().create_task(self._place(room))
        if self._route(room, command) and not self._rehome(command, self._node.id):
            self._join_here(room, peer_id, member, self._node.id)

    def _rehome(self, command: Message, home: str) -> bool:
        """A "rehome" join of a participant already on this core (it resumed on another
        node: same media, new home): send its facts to ``home``. False for any other."""
        homes = self._homes.get(str(command["room"]), {})
        peer_id = str(command["peer_id"])
        if not command.get("rehome") or peer_id not in homes:
            return False
        homes[peer_id] = home
        return True

    def _join_here(self, room: str, peer_id: str, member: Member, home: str) -> None:
        gate = self._gates.get(peer_id) if home == self._node.id else None
        if gate is None:
            gate = TokenBucket(*self._rate).try_take
        self._core.join(room, peer_id, member.policy, gate, may_send_data=member.may_send_data)
        self._homes.setdefault(room, {})[peer_id] = home

    async def leave(self, room: str, peer_id: str) -> None:
        members = self._members.get(room, {})
        if members.pop(peer_id, None) is None:
            return
        self._gates.pop(peer_id, None)
        command: Message = {"op": "leave", "room": room, "peer_id": peer_id}
        here = self._route(room, command)
        if not members:
            self._members.pop(room, None)
            self._owners.pop(room, None)
        if here:
            await self._run_here(command, self._node.id)

    async def resume(self, room: str, peer_id: str) -> None:
        if peer_id in self._members.get(room, {}):
            command: Message = {"op": "resume", "room": room, "peer_id": peer_id}
            if self._route(room, command):
                await self._core.resume(room, peer_id)

    def parse_offer(self, sdp: str, sources: dict[str, str] | None = None) -> ParsedOffer:
        """Validated on the participant's node, so that a bad offer goes no further."""
        return self._core.parse_offer(sdp, sources)

    def offer(self, room: str, peer_id: str, offer: ParsedOffer) -> None:
        sources = {s.mid: s.source for s in offer.sections if s.source}
        command = {
            "op": "offer",
            "room": room,
            "peer_id": peer_id,
            "sdp": offer.description.sdp,
            "sources": sources,
        }
        if self._route(room, command):
            self._core.offer(room, peer_id, offer)

    async def ice(self, room: str, peer_id: str, candidate: IceCandidate | None) -> None:
        command = {
            "op": "ice",
            "room": room,
            "peer_id": peer_id,
            "candidate": candidate.as_dict() if candidate else None,
        }
        if self._route(room, command):
            await self._core.ice(room, peer_id, candidate)

    async def set_muted(self, room: str, peer_id: str, kind: Kind, muted: bool) -> None:
        member = self._members.get(room, {}).get(peer_id)
        if member is None:
            raise ProtocolError("not_in_room", "no such participant in this room")
        command = {
            "op": "set_muted",
            "room": room,
            "peer_id": peer_id,
            "kind": kind,
            "muted": muted,
        }
        if self._route(room, command):
            await self._core.set_muted(room, peer_id, kind, muted)
        if muted:
            member.muted.add(kind)
        else:
            member.muted.discard(kind)

    # -- commands from other nodes (owner side) ---------------------------------------------------

    async def _on_command(self, message: Message) -> None:
        home = str(message["home"])
        try:
            await self._run_here(message, home)
        except ProtocolError as error:
            self._tell(
                home,
                "error",
                str(message["peer_id"]),
                on=message["op"],
                error=wire.error_to_wire(error),
            )

    async def _run_here(self, command: Message, home: str) -> None:
        """Run one command on this node's core (for a participant of ``home``)."""
        op, room, peer_id = command["op"], str(command["room"]), str(command["peer_id"])
        if op == "join" and self._rehome(command, home):
            return
        if op == "join":
            member = Member(
                SlotPolicy(command["policy"]),
                str(command["nickname"]),
                bool(command["may_send_data"]),
            )
            self._join_here(room, peer_id, member, home)
            for kind in command.get("muted", ()):
                await self._core.set_muted(room, peer_id, kind, True)
        elif op == "leave":
            self._forget_home(room, peer_id)
            await self._core.leave(room, peer_id)
        elif op == "offer":
            parsed = await asyncio.to_thread(
                self._core.parse_offer, command["sdp"], command.get("sources")
            )
            self._core.offer(room, peer_id, parsed)
        elif op == "ice":
            await self._core.ice(room, peer_id, ice_candidate(command.get("candidate")))
        elif op == "resume":
            await self._core.resume(room, peer_id)
        elif op == "set_muted":
            await self._core.set_muted(room, peer_id, command["kind"], bool(command["muted"]))
        else:
            raise ProtocolError("bad_request", f"unknown media command {op!r}")

    def _forget_home(self, room: str, peer_id: str) -> None:
        homes = self._homes.get(room, {})
        homes.pop(peer_id, None)
        if not homes:
            self._homes.pop(room, None)
            asyncio.get_running_loop().create_task(self._release(room))

    async def _release(self, room: str) -> None:
        """Let the room's next first join place it anew, unless someone joined meanwhile."""
        if room not in self._homes:
            await self._node.release(room)

    def home_of(self, peer_id: str) -> str | None:
        for homes in self._homes.values():
            if peer_id in homes:
                return homes[peer_id]
        return None

    def _tell(self, home: str, event: str, peer_id: str, **fields: Any) -> None:
        self._node.bus.send(home, {"kind": "fact", "event": event, "peer_id": peer_id, **fields})

    # -- facts from owners (home side) -----------------------------------------------------------

    async def _on_fact(self, message: Message) -> None:
        event, peer_id = message["event"], str(message["peer_id"])
        listener = self._listener
        if event == "answer":
            await listener.answer(peer_id, message["sdp"])
        elif event == "slots_changed":
            await listener.slots_changed(peer_id, wire.slots_from_wire(message["slots"]))
        elif event == "renegotiation_needed":
            await listener.renegotiation_needed(peer_id, message["wanted"])
        elif event == "media_closed":
            await listener.media_closed(peer_id, CloseReason(message["reason"]))
        elif event == "error":
            await listener.error(peer_id, message["on"], wire.error_from_wire(message["error"]))
        elif event == "owner_lost":
            await self._move(str(message["room"]), str(message["owner"]))

    # -- what signaling asks ---------------------------------------------------------------

    def _room_report(self, room: str) -> dict[str, Any]:
        owner = self._owners.get(room) or self._owner_from_reports(room)
        if owner is None:
            return {}
        report: dict[str, Any] = self._node.report_of(owner).get("rooms", {}).get(room, {})
        return report

    def _owner_from_reports(self, room: str) -> str | None:
        for doc in self._node.live_nodes():
            if room in doc.get("rooms", {}):
                return str(doc["id"])
        return None

    def _owns(self, room: str) -> bool:
        return room in self._homes

    def published(self, room: str) -> dict[Kind, int]:
        if self._owns(room):
            return self._core.published(room)
        published = self._room_report(room).get("published") or {}
        return {kind: int(published.get(kind, 0)) for kind in KINDS}

    def active_speaker(self, room: str) -> str | None:
        if self._owns(room):
            return self._core.active_speaker(room)
        speaker = self._room_report(room).get("speaker")
        return str(speaker) if speaker else None

    def room_stats(self, room: str) -> dict[str, Any]:
        if self._owns(room):
            return {**self._core.room_stats(room), "node": self._node.id}
        owner = self._owners.get(room) or self._owner_from_reports(room)
        stats = dict(self._room_report(room).get("stats") or {"peers": []})
        return {**stats, "node": owner}

    def stats(self) -> dict[str, Any]:
        return {
            **self._core.stats(),
            "node": self._node.id,
            "owned_rooms": sorted(self._homes),
            "remote_participants": sum(
                1
                for homes in self._homes.values()
                for home in homes.values()
                if home != self._node.id
            ),
            "moved_rooms_cluster": self.moved_rooms,
        }

    def report(self) -> dict[str, Any]:
        """This node's part of its heartbeat: the rooms whose media it owns."""
        return {
            "load": sum(len(homes) for homes in self._homes.values()),
            "rooms": {
                room: {
                    "published": self._core.published(room),
                    "speaker": self._core.active_speaker(room),
                    "participants": len(homes),
                    "stats": self._core.room_stats(room),
                }
                for room, homes in self._homes.items()
            },
        }

    @property
    def forward_latency(self) -> LatencyHistogram:
        return self._core.forward_latency

    async def close(self) -> None:
        await self._core.close()

    # -- failure -----------------------------------------------------------------------------------

    async def check_rooms(self) -> None:
        """After each heartbeat: keep the owned rooms, drop participants of gone nodes, and
        move this node's participants off owners that are gone."""
        me = self._node.id
        owners = await self._node.refresh(sorted(self._homes))
        for room, owner in owners.items():
            if owner != me:
                logger.warning("room %r was taken over by node %s", room, owner)
                await self._drop_room(room)
        for room, homes in list(self._homes.items()):
            for peer_id, home in list(homes.items()):
                if not self._node.alive(home):
                    self._forget_home(room, peer_id)
                    with contextlib.suppress(ProtocolError):
                        await self._core.leave(room, peer_id)
        for room, owner in list(self._owners.items()):
            if owner != me and not self._node.alive(owner):
                await self._move(room, owner)

    async def drain(self) -> None:
        """The node is stopping (SIGTERM): hand each room it runs to another node first;
        the participants' nodes register them there and their clients reconnect."""
        for room in sorted(self._homes):
            target = self._node.least_loaded_other(exclude=self._node.id)
            if target is None:
                return  # the last node: nowhere to go
            try:
                owner = await self._node.hand_over(room, target)
            except (RedisError, OSError) as exc:
                logger.warning("could not hand room %r over (Redis: %s)", room, exc)
                return
            logger.info("room %r handed over to node %s", room, owner)
            await self._drop_room(room)
        await self._node.bus.flush()

    async def _drop_room(self, room: str) -> None:
        """Another node owns ``room`` now: leave nothing of it here, and have every
        participant's node register it with the new owner."""
        me = self._node.id
        homes = self._homes.pop(room, {})
        for peer_id in homes:
            with contextlib.suppress(ProtocolError):
                await self._core.leave(room, peer_id)
        for home in set(homes.values()) - {me}:
            self._node.bus.send(
                home,
                {"kind": "fact", "event": "owner_lost", "room": room, "owner": me, "peer_id": ""},
            )
        if self._owners.get(room) == me:
            await self._move(room, me)

    async def _move(self, room: str, lost: str) -> None:
        """Place ``room`` again and register this node's participants on its new owner."""
        if not self._members.get(room) or self._owners.get(room) != lost:
            return
        owner = await self._node.claim(room, replacing=lost)
        members = self._members.get(room)
        if not members or self._owners.get(room) != lost:
            return  # everyone left, or it moved meanwhile
        self._owners[room] = owner
        self.moved_rooms += 1
        logger.warning(
            "room %r moved from node %s to %s (%d participants here)",
            room,
            lost,
            owner,
            len(members),
        )
        for peer_id, member in list(members.items()):
            command = _join_command(room, peer_id, member)
            if self._route(room, command):
                await self._run_here(command, self._node.id)
        for peer_id in list(members):
            await self._listener.media_closed(peer_id, CloseReason.MOVED)


def _join_command(room: str, peer_id: str, member: Member) -> Message:
    return {
        "op": "join",
        "room": room,
        "peer_id": peer_id,
        "policy": member.policy.value,
        "nickname": member.nickname,
        "may_send_data": member.may_send_data,
        "muted": sorted(member.muted),
    }


class _OwnerSide:
    """The local core's listener: facts about this node's participants go to the relay
    backend, facts about other nodes' participants go back to their node."""

    def __init__(self, cluster: ClusterSfu) -> None:
        self._cluster = cluster

    def _remote_home(self, peer_id: str) -> str | None:
        home = self._cluster.home_of(peer_id)
        return home if home is not None and home != self._cluster._node.id else None

    async def answer(self, peer_id: str, sdp: str) -> None:
        home = self._remote_home(peer_id)
        if home is None:
            await self._cluster._listener.answer(peer_id, sdp)
        else:
            self._cluster._tell(home, "answer", peer_id, sdp=sdp)

    async def slots_changed(self, peer_id: str, slots: list[SlotInfo]) -> None:
        home = self._remote_home(peer_id)
        if home is None:
            await self._cluster._listener.slots_changed(peer_id, slots)
        else:
            self._cluster._tell(home, "slots_changed", peer_id, slots=wire.slots_to_wire(slots))

    async def renegotiation_needed(self, peer_id: str, wanted: dict[Kind, int]) -> None:
        home = self._remote_home(peer_id)
        if home is None:
            await self._cluster._listener.renegotiation_needed(peer_id, wanted)
        else:
            self._cluster._tell(home, "renegotiation_needed", peer_id, wanted=wanted)

    async def media_closed(self, peer_id: str, reason: CloseReason) -> None:
        home = self._remote_home(peer_id)
        if home is None:
            await self._cluster._listener.media_closed(peer_id, reason)
        else:
            self._cluster._tell(home, "media_closed", peer_id, reason=reason.value)

    async def speaker_changed(self, room: str, peer_id: str | None) -> None:
        # The relay backend tells the whole room, on every node (the Redis manager).
        await self._cluster._listener.speaker_changed(room, peer_id)

    async def uplink_quality(self, room: str, reports: list[UplinkQuality]) -> None:
        # Like the speaker: the relay backend's emit reaches the room on every node.
        await self._cluster._listener.uplink_quality(room, reports)

    async def error(self, peer_id: str, event: str, error: ProtocolError) -> None:
        home = self._remote_home(peer_id)
        if home is None:
            await self._cluster._listener.error(peer_id, event, error)
        else:
            self._cluster._tell(home, "error", peer_id, on=event, error=wire.error_to_wire(error))

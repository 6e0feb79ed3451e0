"""Resume tokens across cluster nodes: a held place handed to the node the client came back to.

A native client whose Socket.IO connection was lost is held in its room by its node
for the grace period (resumption.py). Behind a load balancer it may come back to
another node. Tokens start with the id of the node that issued them; the node the
client reached asks that node, over the bus, for the place. The holder reserves it
(the token is used up) and answers with who it was. The new node gives the new
connection that identity (peer id, nickname, media state, host mutes, room order),
enters the room quietly, re-homes the participant's media with the room's owner, and
tells the holder it took the place; the holder then gives it up without a leave
(nobody hears ``user_left``) and forgets its media bookkeeping without closing the
media. The join resumes as on one node: the owner re-sends the participant's
``tracks``. No answer within ``CLAIM_TIMEOUT`` (the holder is gone, or the token is
unknown there) is a fresh join, as with any token that is not waiting; a reservation
not taken within ``RESERVATION_TIMEOUT`` (the new connection closed meanwhile) ends
like a hold that runs out: the room hears the participant left.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from ..backends.relay import slot_policy
from ..media.types import KINDS
from ..resumption import Resumptions
from ..rooms import Dialect, Participant, Roster
from .bus import Message
from .members import raised_at
from .node import ClusterNode

logger = logging.getLogger(__name__)

RESUME_CLAIM = "resume_claim"  # the bus message: give up the place this token holds
RESUME_CLAIMED = "resume_claimed"  # the answer: the participant's identity, or null
RESUME_TAKEN = "resume_taken"  # the claimant took the place: give it up
CLAIM_TIMEOUT = 3.0  # seconds to wait for the holding node's answer
RESERVATION_TIMEOUT = 15.0  # seconds a holder waits for the claimant to take the place
TOKEN_SEPARATOR = "-"  # node ids are hex: the first "-" ends the node's id


class PlaceHandover:
    """Claims other nodes' resume tokens for this node's new connections, and gives up
    this node's held places to the nodes that claim them."""

    def __init__(self, node: ClusterNode, roster: Roster, resumptions: Resumptions) -> None:
        self._node = node
        self._roster = roster
        self._resumptions = resumptions
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        resumptions.token_prefix = node.id + TOKEN_SEPARATOR
        resumptions.remote_claim = self.claim
        node.handlers[RESUME_CLAIM] = self._reserve
        node.handlers[RESUME_CLAIMED] = self._answered
        node.handlers[RESUME_TAKEN] = self._give_up

    async def claim(self, token: str, room: str, newcomer: Participant) -> Participant | None:
        """``newcomer`` with the identity of the participant ``token`` holds on another
        node, now in ``room`` here; or None (no such place, or no answer in time)."""
        holder = token.split(TOKEN_SEPARATOR, 1)[0]
        if holder == self._node.id or holder not in self._node.nodes:
            return None  # ours (and not waiting), or no live node's: nobody to ask
        request = uuid.uuid4().hex
        answer = asyncio.get_running_loop().create_future()
        self._waiting[request] = answer
        self._node.bus.send(
            holder,
            {
                "kind": RESUME_CLAIM,
                "from": self._node.id,
                "request": request,
                "token": token,
                "room": room,
                "identity": newcomer.grant.identity,
            },
        )
        try:
            reply = await asyncio.wait_for(answer, CLAIM_TIMEOUT)
        except TimeoutError:
            logger.info("node %s did not answer a resume claim for %r", holder, room)
            return None
        finally:
            self._waiting.pop(request, None)
        held = reply.get("participant")
        if not isinstance(held, dict) or self._roster.get(newcomer.sid) is not newcomer:
            return None  # nothing waiting; or the connection closed: the reservation lapses
        await self._take_place(newcomer, room, held)
        self._node.bus.send(holder, {"kind": RESUME_TAKEN, "peer_id": newcomer.peer_id})
        self._resumptions.resumed += 1
        logger.info("%s resumed in %r, coming from node %s", newcomer.peer_id, room, holder)
        return newcomer

    async def _take_place(self, newcomer: Participant, room: str, held: dict[str, Any]) -> None:
        newcomer.nickname = str(held["nickname"])
        newcomer.audio_enabled = bool(held["audio"])
        newcomer.video_enabled = bool(held["video"])
        newcomer.dialect = Dialect.NATIVE
        newcomer.hand_raised_at = raised_at(held.get("hand"))
        muted = {kind for kind in KINDS if kind in held.get("muted_by_host", ())}
        await self._roster.take_place(
            newcomer, room, str(held["peer_id"]), float(held["entered_at"])
        )
        newcomer.muted_by_host.update(muted)
        media = self._node.media_home
        if media is not None:
            media.adopt(
                room,
                newcomer.peer_id,
                slot_policy(newcomer.dialect),
                newcomer.limiter.try_take,
                may_send_data=newcomer.grant.can_publish_data,
                muted=muted,  # as this node's hosts set them
            )

    async def _reserve(self, message: Message) -> None:
        """Another node's new connection claims a place held here: promise it."""
        room, identity = str(message["room"]), message.get("identity")
        token = str(message["token"])
        held = self._resumptions.reserve(token, room, identity, RESERVATION_TIMEOUT)
        answer: dict[str, Any] | None = None
        if held is not None:
            answer = {
                "peer_id": held.peer_id,
                "nickname": held.nickname,
                "audio": held.audio_enabled,
                "video": held.video_enabled,
                "entered_at": held.entered_at,
                "muted_by_host": sorted(held.muted_by_host),
                "hand": held.hand_raised_at,
            }
        self._node.bus.send(
            str(message["from"]),
            {"kind": RESUME_CLAIMED, "request": message["request"], "participant": answer},
        )

    async def _give_up(self, message: Message) -> None:
        """The claimant took a place reserved here: no longer this node's participant."""
        held = self._resumptions.hand_over(str(message["peer_id"]))
        if held is None or held.room is None:
            return
        if self._node.media_home is not None:
            self._node.media_home.give_up(held.room, held.peer_id)
        await self._roster.give_up(held)

    async def _answered(self, message: Message) -> None:
        answer = self._waiting.get(str(message.get("request")))
        if answer is not None and not answer.done():
            answer.set_result(message)

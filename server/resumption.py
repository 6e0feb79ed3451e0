"""Socket.IO reconnects that keep a participant's identity: resume tokens and a grace period.

python-socketio has no connection-state recovery: a connection that drops is a
new participant when it comes back, and everyone else sees it leave and join
again while its media is torn down and rebuilt. Here a native participant's
join ack carries a secret ``resume_token``. When its connection is lost (its
pings stop coming: a network change, a tunnel, a sleeping laptop), the
participant is held in its room for ``grace`` seconds (peer id, nickname, media
connection and all); a new connection that joins the same room with the token
takes its place, silently for the others. When the grace ends, it leaves as
usual. A connection that closes cleanly (a closed tab, a reload, a goodbye)
leaves at once: holding it would show a ghost for the whole grace period.

In a cluster a client may come back through the load balancer to another node:
tokens then start with the id of the node that issued them, and a token of
another node is claimed there (cluster/handover.py) instead of refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from .rooms import Dialect, Participant, Roster

# Claims a token issued by another node: (token, room, newcomer) -> the newcomer, now with
# the held participant's identity, or None.
RemoteClaim = Callable[[str, str, Participant], Awaitable[Participant | None]]

logger = logging.getLogger(__name__)

# Disconnect reasons (python-engineio's) that mean "lost", not "closed": worth a hold.
LOST = frozenset({"ping timeout", "transport error"})


class Resumptions:
    """Issues resume tokens and holds the places of participants whose connection dropped."""

    def __init__(
        self,
        roster: Roster,
        grace: float,
        leave: Callable[[Participant], Awaitable[object]],
    ) -> None:
        self._roster = roster
        self._grace = grace
        self._leave = leave  # the normal departure, when a hold ends without a resume
        self._by_token: dict[str, Participant] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._departures: set[asyncio.Task[None]] = set()
        self.resumed = 0
        self.expired = 0
        self.handed_over = 0  # places taken back on another node of the cluster
        self.token_prefix = ""  # in a cluster: this node's id and "-"
        self.remote_claim: RemoteClaim | None = None

    @property
    def enabled(self) -> bool:
        return self._grace > 0

    def issue(self, participant: Participant) -> str | None:
        """A token for a native participant that just joined (None when resumes are off)."""
        if not self.enabled or participant.dialect is not Dialect.NATIVE:
            return None
        if participant.resume_token is None:
            participant.resume_token = self.token_prefix + secrets.token_urlsafe(18)
            self._by_token[participant.resume_token] = participant
        return participant.resume_token

    def forget(self, participant: Participant) -> None:
        """It left for good (or moved rooms): its token no longer works."""
        if participant.resume_token is not None:
            self._by_token.pop(participant.resume_token, None)
            participant.resume_token = None

    def hold(self, participant: Participant, reason: str) -> bool:
        """Keep the place of a participant whose connection dropped; False: let it leave now."""
        if (
            participant.resume_token is None
            or participant.room is None
            or reason not in LOST
            or not self.enabled
        ):
            return False
        self._roster.hold(participant)
        loop = asyncio.get_running_loop()
        self._timers[participant.peer_id] = loop.call_later(self._grace, self._expire, participant)
        logger.info(
            "%s's connection dropped (%s); holding its place in %r for %.0f s",
            participant.peer_id,
            reason,
            participant.room,
            self._grace,
        )
        return True

    async def claim(self, token: str, room: str, newcomer: Participant) -> Participant | None:
        """The held participant ``token`` names, now on ``newcomer``'s connection; or None."""
        if token not in self._by_token and self.remote_claim is not None:
            return await self.remote_claim(token, room, newcomer)
        held = self._take(token, room, newcomer.grant.identity)
        if held is None:
            return None
        await self._roster.rebind(held, newcomer)
        self.resumed += 1
        logger.info("%s resumed in %r on a new connection", held.peer_id, room)
        return held

    def reserve(
        self, token: str, room: str, identity: str | None, timeout: float
    ) -> Participant | None:
        """The held participant ``token`` names, promised to another node whose new
        connection claimed it: its token is used up, and unless :meth:`hand_over` follows
        within ``timeout`` seconds (that connection closed meanwhile, or its node went
        away) it leaves as when a hold runs out."""
        held = self._take(token, room, identity)
        if held is not None:
            self.forget(held)
            loop = asyncio.get_running_loop()
            self._timers[held.peer_id] = loop.call_later(timeout, self._expire, held)
        return held

    def hand_over(self, peer_id: str) -> Participant | None:
        """The reserved participant ``peer_id``, now taken by the other node; the caller
        moves its media bookkeeping and gives up its place (:meth:`Roster.give_up`)."""
        held = self._roster.by_peer_id(peer_id)
        timer = self._timers.pop(peer_id, None)
        if held is None or not held.away or timer is None:
            return None  # the reservation ran out: it has left already
        timer.cancel()
        self.handed_over += 1
        logger.info("%s resumed in %r on another node", peer_id, held.room)
        return held

    def _take(self, token: str, room: str, identity: str | None) -> Participant | None:
        """The participant waiting in ``room`` under ``token``, its hold ended; or None."""
        held = self._by_token.get(token)
        if held is None or not held.away or held.room != room:
            return None
        if held.grant.identity != identity:
            return None  # a token server: only the same identity may take the place
        timer = self._timers.pop(held.peer_id, None)
        if timer is not None:
            timer.cancel()
        return held

    def _expire(self, participant: Participant) -> None:
        self._timers.pop(participant.peer_id, None)
        if not participant.away:
            return
        self.expired += 1
        task = asyncio.ensure_future(self._depart(participant))
        self._departures.add(task)
        task.add_done_callback(self._departures.discard)

    async def _depart(self, participant: Participant) -> None:
        try:
            await self._leave(participant)
        finally:
            self.forget(participant)
            self._roster.release(participant)

    async def close(self) -> None:
        """Server shutdown: held places end now."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._departures:
            await asyncio.gather(*self._departures, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {
            "held": sum(1 for p in self._by_token.values() if p.away),
            "resumed": self.resumed,
            "expired": self.expired,
            "handed_over": self.handed_over,
        }

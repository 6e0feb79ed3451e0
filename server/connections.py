"""Socket.IO connect and disconnect: a participant record lives exactly as long as its socket."""

from __future__ import annotations

import logging
from typing import Any

import socketio

from .access import AccessControl, AccessError
from .events import EventRouter
from .grants import Grant
from .membership import Membership
from .ratelimit import TokenBucket
from .rooms import Participant, Roster
from .settings import Settings
from .stats import Stats

logger = logging.getLogger(__name__)


def new_participant(settings: Settings, sid: str, grant: Grant, **extra: Any) -> Participant:
    """A connection's participant record, with its rate limits and its token's nickname."""
    participant = Participant(
        sid=sid,
        limiter=TokenBucket(settings.rate_limit, settings.rate_burst),
        candidate_limiter=TokenBucket(
            settings.max_trickled_candidates / 60, settings.max_trickled_candidates
        ),
        grant=grant,
        **extra,
    )
    participant.nickname = grant.nickname or participant.nickname
    return participant


def register_connection_events(
    sio: socketio.AsyncServer,
    settings: Settings,
    roster: Roster,
    router: EventRouter,
    membership: Membership,
    stats: Stats,
    access: AccessControl,
) -> None:
    @sio.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            grant = access.connection_grant(auth, environ.get("QUERY_STRING", ""))
        except AccessError as refused:
            stats.count_error(refused.code)
            logger.info("refused connection %s: %s", sid, refused.message)
            raise socketio.exceptions.ConnectionRefusedError(
                refused.message, refused.payload()
            ) from None
        participant = new_participant(settings, sid, grant)
        roster.add(participant)
        stats.connections_total += 1
        logger.debug("connected %s as peer %s", sid, participant.peer_id)

    @sio.on("disconnect")
    async def disconnect(sid: str, reason: Any = None) -> None:
        await router.settle(sid)
        participant = roster.get(sid)
        if participant is None:
            return
        if membership.resumptions.hold(participant, str(reason)):
            router.forget(sid)  # its place waits for a resume; the connection is gone
            return
        try:
            await membership.leave(participant, reason="disconnect")
        finally:
            membership.resumptions.forget(participant)
            roster.discard(sid)
            router.forget(sid)
        logger.debug("disconnected %s (%s)", sid, reason)

"""Webhooks: room and participant events POSTed to the operator's URL, signed, retried.

Events are queued without waiting (the signaling and media paths never block on
the network) and delivered in order by one background task. Each request carries
``Authorization: <JWT>``, signed with the first API key like an access token,
whose ``sha256`` claim is the base64 SHA-256 of the body (LiveKit's scheme), so a
receiver checks both who sent it and that the body is intact. A failed delivery
(connection error, timeout, non-2xx) is retried with exponential backoff; events
beyond a bounded queue are dropped and counted rather than held without limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from .access import ALGORITHM
from .media.publication import Publication
from .rooms import Participant, Roster
from .tasks import cancel_and_wait

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/webhook+json"
SIGNATURE_TTL = 300  # seconds a signature stays valid (replays are pointless after that)


@dataclass
class DeliveryPolicy:
    """How hard to try: attempts per event, backoff, per-request timeout, queue bound."""

    attempts: int = 5
    first_backoff: float = 0.5  # seconds; doubled after each failure
    max_backoff: float = 30.0
    timeout: float = 5.0
    max_queued: int = 1000


@dataclass
class WebhookStats:
    delivered: int = 0
    retried: int = 0
    failed: int = 0  # gave up after every attempt
    dropped: int = 0  # the queue was full
    by_event: dict[str, int] = field(default_factory=dict)


def sign(body: bytes, key: str, secret: str) -> str:
    """The Authorization header value for ``body``."""
    now = int(time.time())
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return jwt.encode(
        {"iss": key, "sha256": digest, "nbf": now, "exp": now + SIGNATURE_TTL},
        secret,
        algorithm=ALGORITHM,
    )


def participant_info(participant: Participant) -> dict[str, Any]:
    return {
        "peer_id": participant.peer_id,
        "identity": participant.grant.identity,
        "nickname": participant.nickname,
        "hidden": participant.grant.hidden,
    }


class Webhooks:
    """Queues events and delivers them to ``url`` in the background."""

    def __init__(
        self,
        url: str,
        key: str,
        secret: str,
        roster: Roster,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self._url = url
        self._key = key
        self._secret = secret
        self._roster = roster
        self._policy = policy or DeliveryPolicy()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(self._policy.max_queued)
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.stats = WebhookStats()

    # -- what happened -------------------------------------------------------------------

    def send(self, event: str, **details: Any) -> None:
        """Queue ``event``; never waits. The body names the event, an id and a time."""
        body = json.dumps(
            {"event": event, "id": uuid.uuid4().hex, "created_at": time.time(), **details}
        ).encode()
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            logger.warning("webhook queue full; dropped %s", event)
            return
        self.stats.by_event[event] = self.stats.by_event.get(event, 0) + 1

    def participant_joined(self, participant: Participant, room: str, *, first: bool) -> None:
        if first:
            self.send("room_started", room={"name": room})
        self.send(
            "participant_joined", room={"name": room}, participant=participant_info(participant)
        )

    def participant_left(
        self, participant: Participant, room: str, reason: str, *, last: bool
    ) -> None:
        self.send(
            "participant_left",
            room={"name": room},
            participant=participant_info(participant),
            reason=reason,
        )
        if last:
            self.send("room_finished", room={"name": room})

    # PublicationObserver: the SFU reports every publication of every room.
    def publication_added(self, room: str, publication: Publication) -> None:
        participant = self._roster.by_peer_id(publication.peer_id)
        self.send(
            "track_published",
            room={"name": room},
            participant=participant_info(participant) if participant else None,
            track={
                "kind": publication.kind,
                "mid": publication.mid,
                "codec": publication.codec.mimeType,
            },
        )

    def publication_removed(self, publication: Publication) -> None:
        return None

    def recording_finished(self, room: str, peer_id: str, path: str, seconds: float) -> None:
        self.send(
            "recording_finished",
            room={"name": room},
            recording={"peer_id": peer_id, "file": path, "duration_s": round(seconds, 3)},
        )

    def report(self) -> dict[str, Any]:
        """Delivery counters and the backlog, for ``/stats`` and ``/metrics``."""
        return {
            "delivered": self.stats.delivered,
            "retried": self.stats.retried,
            "failed": self.stats.failed,
            "dropped": self.stats.dropped,
            "queued": self._queue.qsize(),
            "by_event": dict(self.stats.by_event),
        }

    # -- delivery ------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._policy.timeout)
        )
        self._worker = asyncio.create_task(self._deliver_all())

    async def close(self, grace: float = 2.0) -> None:
        """Deliver what is queued for up to ``grace`` seconds, then stop."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        await cancel_and_wait(self._worker)
        if self._session is not None:
            await self._session.close()

    async def _deliver_all(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                await self._deliver(body)
            finally:
                self._queue.task_done()

    async def _deliver(self, body: bytes) -> None:
        assert self._session is not None
        backoff = self._policy.first_backoff
        for attempt in range(1, self._policy.attempts + 1):
            headers = {
                "Content-Type": CONTENT_TYPE,
                "Authorization": sign(body, self._key, self._secret),
            }
            try:
                async with self._session.post(self._url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.stats.delivered += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            if attempt == self._policy.attempts:
                break
            self.stats.retried += 1
            logger.info("webhook delivery failed (%s); retrying in %.1f s", problem, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._policy.max_backoff)
        self.stats.failed += 1
        logger.warning(
            "webhook not delivered after %d attempts: %s", self._policy.attempts, problem
        )

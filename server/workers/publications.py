"""Publications of the workers' rooms, as the front's observers (metrics, webhooks) see them.

A worker reports each publication when it starts and ends (with its final
counters) and every live one's counters in its state report; the front stands
a :class:`RemotePublication` in for it, with the few attributes observers read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from . import wire

if TYPE_CHECKING:
    from ..media.publication import Publication, PublicationObserver


@dataclass(frozen=True)
class Codec:
    mimeType: str


@dataclass(eq=False)
class RemotePublication:
    """A worker's publication: who publishes what, and its latest counters."""

    room: str
    peer_id: str
    kind: str
    mid: str | None
    codec: Codec
    facts: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, object]:
        return self.facts


class PublicationReporter:
    """In a worker: tells the front about every publication (a PublicationObserver)."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self._ids = itertools.count(1)
        self.live: dict[Publication, int] = {}

    def publication_added(self, room: str, publication: Publication) -> None:
        number = self.live[publication] = next(self._ids)
        self._send(
            "publication_added",
            id=number,
            room=room,
            peer_id=publication.peer_id,
            kind=publication.kind,
            mid=publication.mid,
            codec=publication.codec.mimeType,
            facts=publication.stats(),
        )

    def publication_removed(self, publication: Publication) -> None:
        number = self.live.pop(publication, None)
        if number is not None:
            self._send("publication_removed", id=number, facts=publication.stats())

    def report(self) -> dict[str, dict[str, object]]:
        """Every live publication's counters, by id (for the state report)."""
        return {str(number): publication.stats() for publication, number in self.live.items()}


class PublicationMirror:
    """In the front: one worker's publications, passed on to the observers."""

    def __init__(self, observers: list[PublicationObserver]) -> None:
        self._observers = observers
        self._live: dict[tuple[int, int], RemotePublication] = {}

    def handle(self, worker_key: int, message: wire.Message) -> bool:
        """Take a publication event of the worker ``worker_key`` (its pid); False for others."""
        if message["event"] == "publication_added":
            publication = RemotePublication(
                message["room"],
                message["peer_id"],
                message["kind"],
                message["mid"],
                Codec(message["codec"]),
                message["facts"],
            )
            self._live[worker_key, message["id"]] = publication
            for observer in self._observers:
                observer.publication_added(publication.room, cast("Publication", publication))
            return True
        if message["event"] == "publication_removed":
            ended = self._live.pop((worker_key, message["id"]), None)
            if ended is not None:
                ended.facts = message["facts"]
                self._end(ended)
            return True
        return False

    def refresh(self, worker_key: int, report: dict[str, dict[str, Any]]) -> None:
        for number, facts in report.items():
            publication = self._live.get((worker_key, int(number)))
            if publication is not None:
                publication.facts = facts

    def worker_lost(self, worker_key: int) -> None:
        """A dead worker's publications ended with it (at their last reported counters)."""
        for key in [key for key in self._live if key[0] == worker_key]:
            self._end(self._live.pop(key))

    def _end(self, publication: RemotePublication) -> None:
        for observer in self._observers:
            observer.publication_removed(cast("Publication", publication))

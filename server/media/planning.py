"""Which published track goes to which receive slot of a participant: pure decisions, no I/O.

Two policies (:class:`~server.media.types.SlotPolicy`): *every source* gives each
other publication its own slot and reports how many slots are missing; *follow
speaker* fills a fixed set of slots with the most relevant speakers' tracks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol, TypeVar

from .types import KINDS, Kind


class Source(Protocol):
    """A publication as planning sees it."""

    @property
    def key(self) -> str: ...  # unique per publication

    @property
    def kind(self) -> Kind: ...

    @property
    def peer_id(self) -> str: ...

    @property
    def source(self) -> str: ...  # microphone, camera, screen or screen_audio


class Receiver(Hashable, Protocol):
    """A receive slot as planning sees it."""

    @property
    def kind(self) -> str: ...

    @property
    def source(self) -> Source | None: ...


SlotT = TypeVar("SlotT", bound=Receiver)
SourceT = TypeVar("SourceT", bound=Source)


def plan_every_source(
    slots: Sequence[SlotT], sources: Iterable[SourceT]
) -> tuple[dict[SlotT, SourceT | None], Counter[Kind]]:
    """Give each source its own slot, keeping current assignments stable.

    Returns the plan and, per kind, how many sources found no free slot.
    """
    sources = list(sources)
    by_key = {source.key: source for source in sources}
    plan: dict[SlotT, SourceT | None] = {}
    placed: set[str] = set()
    for slot in slots:
        current = slot.source
        if current is not None and current.key in by_key and current.key not in placed:
            plan[slot] = by_key[current.key]
            placed.add(current.key)
    free = [slot for slot in slots if slot not in plan]
    missing: Counter[Kind] = Counter()
    for source in sources:
        if source.key in placed:
            continue
        match = next((s for s in free if s.kind == source.kind), None)
        if match is None:
            missing[source.kind] += 1
            continue
        free.remove(match)
        plan[match] = source
        placed.add(source.key)
    for slot in free:
        plan[slot] = None
    return plan, missing


def plan_follow_speaker(
    slots: Sequence[SlotT], sources: Iterable[SourceT], speaker_order: Sequence[str]
) -> dict[SlotT, SourceT | None]:
    """Fill each kind's slots with the sources of the most relevant speakers first.

    A shared screen comes before every camera while it lasts: it is what the room looks at.
    """
    rank = {peer_id: index for index, peer_id in enumerate(speaker_order)}
    sources = list(sources)
    plan: dict[SlotT, SourceT | None] = {}
    for kind in KINDS:
        kind_slots = [slot for slot in slots if slot.kind == kind]
        ranked = sorted(
            (s for s in sources if s.kind == kind),
            key=lambda s: (s.source != "screen", rank.get(s.peer_id, len(rank)), s.key),
        )
        for index, slot in enumerate(kind_slots):
            plan[slot] = ranked[index] if index < len(ranked) else None
    return plan

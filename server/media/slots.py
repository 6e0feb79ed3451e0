"""Which published track goes to which outgoing m-line of a subscriber.

Two policies: native clients receive *every* other publication (one slot each,
more slots requested by renegotiation), zoom-clone video clients have one audio
and one video slot and follow the active speaker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiortc import RTCRtpTransceiver

from .outbound import SlotTrack
from .publication import Publication

Plan = dict["Slot", "Publication | None"]


@dataclass(eq=False)
class Slot:
    """An m-line on which the server sends one relayed track to a subscriber."""

    transceiver: RTCRtpTransceiver
    track: SlotTrack
    codec: str | None = None  # the codec of its first answer; its sender keeps it for good

    @property
    def kind(self) -> str:
        return self.track.kind

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def source(self) -> Publication | None:
        return self.track.source


def plan_every_source(
    slots: Sequence[Slot], sources: Iterable[Publication]
) -> tuple[Plan, Counter[str]]:
    """Give each source its own slot, keeping current assignments stable.

    Returns the plan and, per kind, how many sources found no free slot.
    """
    sources = list(sources)
    wanted = {source.key for source in sources}
    plan: Plan = {}
    placed: set[str] = set()
    for slot in slots:
        if slot.source is not None and slot.source.key in wanted and slot.source.key not in placed:
            plan[slot] = slot.source
            placed.add(slot.source.key)
    free = [slot for slot in slots if slot not in plan]
    missing: Counter[str] = Counter()
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
    slots: Sequence[Slot], sources: Iterable[Publication], speaker_order: Sequence[str]
) -> Plan:
    """Fill each kind's slots with the sources of the most relevant speakers first.

    A shared screen comes before every camera while it lasts: it is what the room looks at.
    """
    rank = {peer_id: index for index, peer_id in enumerate(speaker_order)}
    sources = list(sources)
    plan: Plan = {}
    for kind in ("audio", "video"):
        kind_slots = [slot for slot in slots if slot.kind == kind]
        ranked = sorted(
            (s for s in sources if s.kind == kind),
            key=lambda s: (s.source != "screen", rank.get(s.peer_id, len(rank)), s.key),
        )
        for index, slot in enumerate(kind_slots):
            plan[slot] = ranked[index] if index < len(ranked) else None
    return plan


def apply_plan(plan: Plan) -> list[Slot]:
    """Attach or detach each slot's source as planned; returns the slots that changed."""
    changed = []
    for slot, source in plan.items():
        if slot.source is source:
            continue
        if source is None:
            slot.track.detach()
        else:
            slot.track.attach(source)
        changed.append(slot)
    return changed

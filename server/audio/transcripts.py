"""Each room's transcript, kept in memory so clients joining late can read what was said."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from .consumer import local_stamp


class TranscriptStore:
    """The last ``max_entries`` transcript entries of each of the last ``max_rooms`` rooms.

    Entries are the ``transcript`` event payloads (``peer_id``, ``nickname``, ``text``,
    ``start``, ``end``...). A room outlives its participants, so a transcript can be
    read after the meeting; the room least recently written to is forgotten first.
    """

    def __init__(self, max_entries: int = 10_000, max_rooms: int = 1_000) -> None:
        self._max_entries = max_entries
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def add(self, room: str, entry: Mapping[str, Any]) -> None:
        """Append a final transcript entry; empty texts are not worth keeping."""
        if not str(entry.get("text", "")).strip():
            return
        lines = self._rooms.get(room)
        if lines is None:
            lines = self._rooms[room] = deque(maxlen=self._max_entries)
            while len(self._rooms) > self._max_rooms:
                self._rooms.popitem(last=False)
        else:
            self._rooms.move_to_end(room)
        lines.append(dict(entry))

    def entries(self, room: str) -> list[dict[str, Any]]:
        """The room's entries (copies) in order of when they were said.

        Utterances finish recognition out of order (a long one ends after a short
        one that started later), hence the sort by start time.
        """
        lines = self._rooms.get(room, ())
        return sorted((dict(entry) for entry in lines), key=lambda e: e.get("start", 0.0))

    def as_text(self, room: str) -> str:
        """The transcript as lines like ``[14:25:01] Ada: hello there`` (server local time)."""
        return "".join(
            f"[{local_stamp(entry.get('start', 0.0), '%H:%M:%S')}] "
            f"{_one_line(entry.get('nickname', ''))}: {_one_line(entry.get('text', ''))}\n"
            for entry in self.entries(room)
        )

    def rooms(self) -> list[str]:
        """Rooms with a transcript, least recently written first."""
        return list(self._rooms)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())

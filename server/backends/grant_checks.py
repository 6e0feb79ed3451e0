"""Whether a session description publishes or subscribes against a participant's grant.

Relay mode checks the offers the server answers (already parsed); p2p mode checks the
offers and answers it passes between browsers, with a light scan of their m-lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..grants import Grant
from ..media.types import KINDS
from ..validation import ProtocolError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class MediaDirection(Protocol):
    """An m-line as far as permissions go: its kind, and which ways its media flows."""

    @property
    def kind(self) -> str: ...

    @property
    def client_sends(self) -> bool: ...

    @property
    def client_receives(self) -> bool: ...


@dataclass(frozen=True)
class ScannedSection:
    kind: str
    client_sends: bool
    client_receives: bool


def check_media_allowed(grant: Grant, sections: Iterable[MediaDirection]) -> None:
    """Refuse media that publishes or subscribes against the participant's grant."""
    media = [section for section in sections if section.kind in KINDS]
    if (not grant.can_publish or grant.hidden) and any(s.client_sends for s in media):
        raise ProtocolError(
            "forbidden", "your access token does not allow publishing (send recvonly)"
        )
    if not grant.can_subscribe and any(section.client_receives for section in media):
        raise ProtocolError(
            "forbidden", "your access token does not allow subscribing (send sendonly)"
        )


def scan_directions(sdp: str) -> list[ScannedSection]:
    """Each m-line's kind and direction (sendrecv unless said; port 0: inactive)."""
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            fields = line[2:].split()
            port = fields[1] if len(fields) > 1 else "0"
            sections.append([fields[0] if fields else "", "inactive" if port == "0" else ""])
        elif sections and line.startswith("a=") and line[2:] in DIRECTIONS:
            section = sections[-1]
            section[1] = "inactive" if section[1] == "inactive" else line[2:]
    return [
        ScannedSection(
            kind,
            client_sends=(direction or "sendrecv") in ("sendrecv", "sendonly"),
            client_receives=(direction or "sendrecv") in ("sendrecv", "recvonly"),
        )
        for kind, direction in sections
    ]

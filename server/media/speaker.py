"""Active-speaker detection from the audio levels publishers put in their RTP packets.

Browsers (and aiortc) send the ``ssrc-audio-level`` header extension with every
audio packet, so the server knows who is loud without decoding any audio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

SILENCE_DBOV = 127


@dataclass
class _Voice:
    loudness: float = 0.0  # smoothed (127 - level): 0 is silence
    updated: float = 0.0


class SpeakerDetector:
    """Keeps participants ordered by how recently they were the dominant speaker.

    A participant becomes dominant after being the loudest voice above
    ``threshold_dbov`` for ``hold`` seconds; silence never demotes anyone, so
    video does not flicker away from the last person who spoke.
    """

    def __init__(
        self,
        threshold_dbov: int = 55,
        hold: float = 0.4,
        smoothing: float = 0.15,
        stale_after: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = float(SILENCE_DBOV - threshold_dbov)
        self._hold = hold
        self._smoothing = smoothing
        self._stale_after = stale_after
        self._clock = clock
        self._voices: dict[str, _Voice] = {}
        self._order: list[str] = []
        self._challenger: tuple[str, float] | None = None
        self.dominant: str | None = None

    @property
    def order(self) -> list[str]:
        """Participants, most relevant first: recent dominant speakers, then by arrival."""
        return list(self._order)

    def add(self, peer_id: str) -> None:
        if peer_id not in self._voices:
            self._voices[peer_id] = _Voice()
            self._order.append(peer_id)

    def remove(self, peer_id: str) -> None:
        self._voices.pop(peer_id, None)
        if peer_id in self._order:
            self._order.remove(peer_id)
        if self.dominant == peer_id:
            self.dominant = None
        if self._challenger and self._challenger[0] == peer_id:
            self._challenger = None

    def level(self, peer_id: str, level_dbov: int) -> None:
        """Record one packet's audio level (0 = loudest, 127 = silence)."""
        voice = self._voices.get(peer_id)
        if voice is None:
            return
        voice.loudness += self._smoothing * ((SILENCE_DBOV - level_dbov) - voice.loudness)
        voice.updated = self._clock()

    def loudness(self, peer_id: str) -> float:
        voice = self._voices.get(peer_id)
        if voice is None or self._clock() - voice.updated > self._stale_after:
            return 0.0
        return voice.loudness

    def evaluate(self) -> bool:
        """Re-decide the dominant speaker; True when it changed."""
        now = self._clock()
        speaking = {
            peer: loud for peer in self._voices if (loud := self.loudness(peer)) > self._threshold
        }
        if not speaking:
            self._challenger = None
            return False
        loudest = max(speaking, key=speaking.__getitem__)
        if loudest == self.dominant:
            self._challenger = None
            return False
        if self._challenger is None or self._challenger[0] != loudest:
            self._challenger = (loudest, now)
            return False
        if now - self._challenger[1] < self._hold:
            return False
        self.dominant = loudest
        self._challenger = None
        self._order.remove(loudest)
        self._order.insert(0, loudest)
        return True

"""Who may open a Socket.IO connection: a global cap, a per-address cap, and the fd limit.

Every engine.io session costs memory and, over WebSocket, a file descriptor; a
single client opening thousands of them used to starve everyone else (and
``accept()`` then failed with EMFILE). Sessions are counted from engine.io's
connect to its disconnect, by client address.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Soft fd limit to aim for when the hard limit is unlimited.
FD_TARGET_WHEN_UNLIMITED = 1 << 20
# File descriptors one connection may need: its socket, and a relay peer's UDP sockets.
FDS_PER_CONNECTION = 4


@dataclass(frozen=True)
class Refusal:
    """Why a connection was refused; ``message`` goes back to the client."""

    reason: str
    message: str


class Admission:
    """Counts open sessions per client address and refuses those over a cap (0: no cap)."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self._address_of: dict[str, str] = {}  # session id -> client address
        self._per_address: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._address_of)

    def admit(self, session: str, address: str, alive: Collection[str]) -> Refusal | None:
        """Count ``session`` in, or say why not. ``alive``: the sessions engine.io still has.

        Sessions engine.io dropped without a disconnect event are forgotten first,
        so a missed event can never lock an address out for good.
        """
        refusal = self._refusal(address)
        if refusal is not None:
            self._forget_dead(alive)
            refusal = self._refusal(address)
        if refusal is not None:
            self.refused[refusal.reason] += 1
            return refusal
        self._address_of[session] = address
        self._per_address[address] += 1
        return None

    def release(self, session: str) -> None:
        address = self._address_of.pop(session, None)
        if address is None:
            return
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    def _refusal(self, address: str) -> Refusal | None:
        if self.max_connections and len(self._address_of) >= self.max_connections:
            return Refusal("server_full", "the server is full; try again later")
        if self.max_per_address and self._per_address[address] >= self.max_per_address:
            return Refusal("address_full", "too many connections from your address")
        return None

    def _forget_dead(self, alive: Collection[str]) -> None:
        for session in [s for s in self._address_of if s not in alive]:
            self.release(session)

    def stats(self) -> dict[str, object]:
        return {
            "connections": len(self._address_of),
            "addresses": len(self._per_address),
            "max_connections": self.max_connections,
            "max_connections_per_ip": self.max_per_address,
            "refused": dict(self.refused),
        }


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_TARGET_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit from %d: %s", soft, exc)
    return soft, hard


def log_limits(admission: Admission, soft_fds: int, hard_fds: int) -> None:
    """Say what the server will accept, and warn when the fd limit cannot carry it."""
    logger.info(
        "limits: %s connections, %s per client address, %d open files (hard limit %s)",
        admission.max_connections or "unlimited",
        admission.max_per_address or "unlimited",
        soft_fds,
        "unlimited" if hard_fds == resource.RLIM_INFINITY else hard_fds,
    )
    if soft_fds != resource.RLIM_INFINITY:
        affordable = soft_fds // FDS_PER_CONNECTION
        if not admission.max_connections or admission.max_connections > affordable:
            logger.warning(
                "the open-files limit (%d) carries about %d connections; lower "
                "--max-connections or raise the limit (ulimit -n)",
                soft_fds,
                affordable,
            )

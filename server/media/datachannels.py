"""Data channels between participants of a room, passed through the server.

Browsers that call each other directly (``--media p2p``) can talk over their own
data channels; zoom-clone clients open one named ``chat`` for exactly that. In
relay mode each browser's channels end at the server instead, so the server
passes every message on to the other participants' channels with the same label,
as if they were connected directly. Messages are checked (size, and the sender's
rate limit shared with its Socket.IO events) and never reach another room.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiortc import RTCDataChannel

from ..validation import ProtocolError
from .types import RateGate

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024  # what every browser can send and receive in one message

Refuse = Callable[[str, ProtocolError], Awaitable[None]]


class DataChannelBridge:
    """One room's data channels, by participant, and the forwarding between them.

    A client may open several channels with one label (zoom-clone opens a new
    ``chat`` channel at each renegotiation); messages go to the newest open one
    of each other participant.
    """

    def __init__(self, refuse: Refuse) -> None:
        self._refuse_to = refuse
        self._channels: dict[str, list[RTCDataChannel]] = {}  # peer_id -> newest last
        self.forwarded = 0
        self.refused = 0

    def attach(self, peer_id: str, channel: RTCDataChannel, rate_gate: RateGate) -> None:
        """Relay what ``channel`` receives; deliver other participants' messages to it.

        ``rate_gate`` is the sender's rate limit, shared with its signaling events; it
        raises ProtocolError to refuse the sender outright.
        """
        self._channels.setdefault(peer_id, []).append(channel)

        @channel.on("message")
        async def on_message(message: str | bytes) -> None:
            if channel in self._channels.get(peer_id, ()):
                await self._forward(peer_id, rate_gate, channel.label, message)

        @channel.on("close")
        def on_close() -> None:
            channels = self._channels.get(peer_id, [])
            if channel in channels:
                channels.remove(channel)

    def detach(self, peer_id: str) -> None:
        """Forget a participant's channels (its connection closed)."""
        for channel in self._channels.pop(peer_id, []):
            channel.remove_all_listeners()

    async def _forward(
        self, sender: str, rate_gate: RateGate, label: str, message: str | bytes
    ) -> None:
        size = len(message.encode() if isinstance(message, str) else message)
        if size > MAX_MESSAGE_BYTES:
            limit = f"data channel messages are at most {MAX_MESSAGE_BYTES} bytes"
            await self._refuse(sender, "too_large", limit)
            return
        try:
            allowed = rate_gate()
        except ProtocolError as refusal:  # the gate may refuse outright (no permission)
            self.refused += 1
            await self._refuse_to(sender, refusal)
            return
        if not allowed:
            await self._refuse(sender, "rate_limited", "too many messages; slow down")
            return
        for peer_id, channels in self._channels.items():
            if peer_id == sender:
                continue
            target = next(
                (c for c in reversed(channels) if c.label == label and c.readyState == "open"),
                None,
            )
            if target is not None:
                target.send(message)
                self.forwarded += 1

    async def _refuse(self, sender: str, code: str, text: str) -> None:
        self.refused += 1
        await self._refuse_to(sender, ProtocolError(code, text))

    def stats(self) -> dict[str, int]:
        return {
            "channels": sum(len(channels) for channels in self._channels.values()),
            "forwarded": self.forwarded,
            "refused": self.refused,
        }

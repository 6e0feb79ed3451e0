"""The track behind each outgoing m-line ("slot") of a subscriber's peer connection.

An ``RTCRtpSender`` stops for good when its track raises ``MediaStreamError``,
and ``replaceTrack`` only takes effect after the old track yields a frame. So a
slot keeps one track for its whole life and switches *what feeds it* instead:
``attach`` a publication, ``detach`` it, never end while the slot exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

if TYPE_CHECKING:
    from av.frame import Frame

    from .publication import Publication

logger = logging.getLogger(__name__)


class OutboundTrack(MediaStreamTrack):
    """A slot's track; which publication feeds it can change at any time."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.source: Publication | None = None
        self._closing = False

    def attach(self, publication: Publication) -> None:
        """Feed this slot from ``publication`` (replacing any previous source)."""
        raise NotImplementedError

    def detach(self) -> None:
        """Stop feeding this slot; the sender waits quietly until the next attach."""
        raise NotImplementedError

    def close(self) -> None:
        """End the slot: the server no longer sends on this m-line."""
        self._closing = True
        self.stop()

    def stop(self) -> None:
        if not self._closing and self.readyState == "live":
            # aiortc's sender stops its track when it dies (e.g. an encoder error).
            logger.warning("a %s sender stopped unexpectedly; its slot is gone", self.kind)
        self.detach()
        super().stop()


class DecodedOutboundTrack(OutboundTrack):
    """Feeds decoded frames from a ``MediaRelay`` proxy; the sender re-encodes them.

    This is the naive path (one encoder per subscriber). It is the benchmark
    baseline and the fallback for a subscriber that cannot take the
    publisher's codec.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._proxy: MediaStreamTrack | None = None
        self._switched: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def attach(self, publication: Publication) -> None:
        if publication is self.source:
            return
        self.detach()
        self.source = publication
        self._proxy = publication.decoded()
        publication.subscribers.add(self)
        self._signal_switch()

    def detach(self) -> None:
        if self.source is not None:
            self.source.subscribers.discard(self)
        if self._proxy is not None:
            self._proxy.stop()
        self.source = None
        self._proxy = None
        self._signal_switch()

    def _signal_switch(self) -> None:
        if not self._switched.done():
            self._switched.set_result(None)
        self._switched = asyncio.get_running_loop().create_future()

    async def recv(self) -> Frame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            proxy, switched = self._proxy, self._switched
            if proxy is None:
                await switched
                continue
            pending = asyncio.ensure_future(proxy.recv())
            try:
                await asyncio.wait((pending, switched), return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the sender itself is cancelled while we wait
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                        await pending
            if pending.cancelled():
                continue
            try:
                return pending.result()
            except MediaStreamError:
                if proxy is self._proxy:  # the source ended: wait for the next attach
                    self.detach()

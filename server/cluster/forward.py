"""Requests about a room whose media runs on another node are answered by that node.

A room's captions and live audio live where its media runs (the owning node's
audio tap and transcript store). ``GET /rooms/{room}/transcript`` on any other
node fetches them from the owner at the URL in its heartbeat, with the caller's
credentials, and ``/ws/audio`` streams a room's audio from the owner's
``/ws/audio``; the owner answers from its own store (the forwarded mark stops any
loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from ..tasks import cancel_and_wait
from ..validation import ProtocolError
from .node import ClusterNode

logger = logging.getLogger(__name__)

FORWARDED = "X-Roomrelay-Forwarded"
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
# Caller headers the owner needs to answer as this node would (access control, format).
PASSED_HEADERS = ("Authorization", "Accept")
RETURNED_HEADERS = ("Content-Type", "Content-Disposition")


def other_node_url(node: ClusterNode | None, owner: str | None) -> str | None:
    """The URL of ``owner`` when it is another node of the cluster (None: here, or alone)."""
    if node is None or owner is None or owner == node.id:
        return None
    url = node.report_of(owner).get("url")
    return str(url) if url else None


def owner_url(node: ClusterNode | None, owner: str | None, request: web.Request) -> str | None:
    """The owning node's URL when the request should go there (not here, not forwarded)."""
    return None if FORWARDED in request.headers else other_node_url(node, owner)


async def forward_get(request: web.Request, base_url: str) -> web.Response:
    """Ask the owning node for the same path and query; its answer is ours."""
    headers = {name: request.headers[name] for name in PASSED_HEADERS if name in request.headers}
    headers[FORWARDED] = "1"
    url = base_url + request.rel_url.path_qs
    try:
        async with (
            aiohttp.ClientSession(timeout=FORWARD_TIMEOUT) as session,
            session.get(url, headers=headers) as answer,
        ):
            body = await answer.read()
            kept = {n: answer.headers[n] for n in RETURNED_HEADERS if n in answer.headers}
            return web.Response(body=body, status=answer.status, headers=kept)
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("could not reach the node at %s for %s (%r)", base_url, request.path, exc)
        return web.json_response(
            {"error": "node_unreachable", "message": "the room's media node did not answer"},
            status=502,
        )


class NodeAudioStream:
    """Live audio of a room whose media runs on another node: that node's ``/ws/audio``
    streams it, and this node passes each PCM message and each control answer on.

    Speaks for the client with its own credentials (the query string that carried its
    token); the owner answers as it would answer the client (errors included), and the
    forwarded mark stops a second hop when placement changed meanwhile.
    """

    def __init__(self, room: str, peer_id: str | None) -> None:
        self.room = room
        self.peer_id = peer_id
        self.dropped = 0  # chunks: counted by the owner, which drops them for a slow reader
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._pipe: asyncio.Task[None] | None = None

    async def open(
        self,
        base_url: str,
        query_string: str,
        send_pcm: Callable[[bytes], Awaitable[None]],
        send_json: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Connect to the owner, ask for the stream, and pass on what comes back."""
        url = base_url.replace("http", "ws", 1) + f"/ws/audio/relay-{uuid.uuid4().hex[:16]}"
        if query_string:
            url += "?" + query_string
        self._session = aiohttp.ClientSession(timeout=FORWARD_TIMEOUT)
        try:
            self._socket = await self._session.ws_connect(url, headers={FORWARDED: "1"})
            start = {"type": "start_streaming", "room": self.room, "peer_id": self.peer_id}
            await self._socket.send_str(json.dumps(start))
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.close()
            logger.warning("could not reach the node at %s for live audio (%r)", base_url, exc)
            raise ProtocolError("node_unreachable", "the room's media node did not answer") from exc
        self._pipe = asyncio.create_task(self._pass_on(self._socket, send_pcm, send_json))

    @staticmethod
    async def _pass_on(
        socket: aiohttp.ClientWebSocketResponse,
        send_pcm: Callable[[bytes], Awaitable[None]],
        send_json: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            async for message in socket:
                if message.type is aiohttp.WSMsgType.BINARY:
                    await send_pcm(message.data)
                elif message.type is aiohttp.WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        await send_json(json.loads(message.data))
        # Not cancelled: the owner closed the stream (it stopped, or the room moved).
        await send_json(
            {
                "type": "error",
                "code": "node_unreachable",
                "message": "the room's media node stopped streaming; start_streaming again",
            }
        )

    async def close(self) -> None:
        await cancel_and_wait(self._pipe)
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()

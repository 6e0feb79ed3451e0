"""HTTP requests about a room whose media runs on another node are answered by that node.

A room's captions live where its media runs (the owning node's audio tap and
transcript store). ``GET /rooms/{room}/transcript`` on any other node fetches
them from the owner at the URL in its heartbeat, with the caller's credentials;
the owner answers from its own store (the forwarded mark stops any loop).
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

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

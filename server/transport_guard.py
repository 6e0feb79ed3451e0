"""Keeps transport-level mistakes of clients from looking like server bugs.

python-engineio raises ``KeyError('Session is disconnected')`` for a
long-polling request that arrives just after its session closed (a client
that disconnected while its next poll was in flight). aiohttp would answer
500 with a traceback; it is the client's stale request, so it gets 400, as
engine.io answers every other request for an unknown session.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

logger = logging.getLogger(__name__)

SOCKETIO_PATH = "/socket.io/"


@web.middleware
async def stale_sessions_are_bad_requests(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        return await handler(request)
    except KeyError as error:
        if not request.path.startswith(SOCKETIO_PATH) or "Session" not in str(error):
            raise
        logger.debug("stale engine.io request for %s: %s", request.query.get("sid"), error)
        return web.Response(status=400, text=f"Bad Request: {error.args[0]}")

"""WebSocket options python-socketio does not expose: permessage-deflate, off by default.

aiohttp accepts permessage-deflate whenever a client offers it, and every browser
and socket.io-client does; engine.io gives no way to turn it off. Compressing each
small signalling message costs more CPU than anything else on the relay path
(bench/signaling_bench.py), and Node's socket.io leaves it off by default too. This
middleware hides the client's offer from aiohttp, so the WebSocket is uncompressed.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

SOCKETIO_PATH = "/socket.io/"


def without_websocket_compression() -> Middleware:
    """Refuse permessage-deflate on Socket.IO WebSockets (the client falls back to none)."""

    @web.middleware
    async def refuse_deflate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if hdrs.SEC_WEBSOCKET_EXTENSIONS in request.headers and request.path.startswith(
            SOCKETIO_PATH
        ):
            headers = request.headers.copy()
            del headers[hdrs.SEC_WEBSOCKET_EXTENSIONS]
            request = request.clone(headers=headers)
        return await handler(request)

    return refuse_deflate

"""roomrelay with one python-socketio / engine.io option changed, for bench/signaling_bench.py.

``python -m bench.variant_server VARIANT [server flags...]`` starts the normal server
(``server.cli``) after adjusting how it builds its ``socketio.AsyncServer``:

- ``default``: nothing changed.
- ``stock-manager``: python-socketio's own ``AsyncManager`` (one task per recipient,
  unbounded queues) instead of ``server.fanout.FanoutManager``.
- ``async-handlers``: ``async_handlers=True`` (each event in its own task; breaks the
  per-connection event order roomrelay relies on, measured for reference only).
- ``stock-packet``: python-socketio's own packet class (standard library json, a
  full walk of every payload for binary parts) instead of ``server.packets.FastPacket``.
- ``uvloop``: the same server on uvloop's event loop instead of asyncio's (not a
  dependency of roomrelay: ``pip install uvloop`` to measure it).
- ``deflate``: ``--websocket-compression`` (permessage-deflate accepted, as aiohttp does
  unless told otherwise).
- ``stock-engineio``: python-engineio's own sessions (a task and a timer per message and
  per ping) instead of ``server.engine_socket.LeanEngineServer``.
- ``socketio-pings``: Socket.IO's default heartbeat (a ping every 25 s, 20 s to answer)
  instead of roomrelay's 4 s + 5 s, which notices a vanished client sooner.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import socketio


def patch_server_options(**changes: Any) -> None:
    original = socketio.AsyncServer.__init__

    def init(self: socketio.AsyncServer, *args: Any, **kwargs: Any) -> None:
        kwargs.update(changes)
        if kwargs.get("client_manager") is None:
            kwargs.pop("client_manager", None)
        original(self, *args, **kwargs)

    socketio.AsyncServer.__init__ = init  # type: ignore[method-assign]


def use_stock_engineio() -> None:
    import engineio  # noqa: PLC0415

    from server.socket_server import SocketServer  # noqa: PLC0415

    class StockEngineServer(engineio.AsyncServer):
        def promote(self, sid: str) -> None:
            """Sessions stay engine.io's own."""

    SocketServer._engineio_server_class = lambda self: StockEngineServer  # type: ignore[method-assign]


def use_uvloop() -> None:
    import uvloop  # noqa: PLC0415  (only this variant needs it)

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


VARIANTS: dict[str, tuple[Callable[[], None], list[str]]] = {
    "default": (lambda: None, []),
    "stock-manager": (lambda: patch_server_options(client_manager=None), []),
    "async-handlers": (lambda: patch_server_options(async_handlers=True), []),
    "stock-engineio": (use_stock_engineio, []),
    "stock-packet": (lambda: patch_server_options(serializer="default"), []),
    "deflate": (lambda: None, ["--websocket-compression"]),
    "uvloop": (use_uvloop, []),
    "socketio-pings": (lambda: None, ["--ping-interval", "25", "--ping-timeout", "20"]),
}


def main() -> None:
    variant, *server_args = sys.argv[1:]
    patch, extra_args = VARIANTS[variant]
    patch()
    server_args += extra_args
    from server.cli import main as serve  # noqa: PLC0415  (after the patches)

    sys.argv = ["roomrelay", *server_args]
    serve()


if __name__ == "__main__":
    main()

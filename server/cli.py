"""Command line entry point: ``roomrelay`` and ``python -m server``."""

from __future__ import annotations

import asyncio.constants
import logging
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from . import __version__
from .admission import log_limits, raise_fd_limit
from .app import create_app
from .client_bundle import ClientBundleMissing
from .context import SERVER_KEY
from .logs import configure_logging
from .settings import Settings, load_settings
from .token_cli import token_main

logger = logging.getLogger("roomrelay")

# Seconds aiohttp waits for open requests (websockets, long polls) when stopping.
SHUTDOWN_TIMEOUT = 1.0
# Seconds a TCP connection may sit without a request (new, or kept alive between requests)
# before aiohttp closes it; idle connections otherwise hold file descriptors for 75 s.
IDLE_TIMEOUT = 15.0


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """An HTTPS context from --tls-cert/--tls-key, or None for plain HTTP."""
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    # A client that closed its TLS connection without a close_notify (urllib does) would
    # hold the server's shutdown for asyncio's default 30 s; aiohttp cannot pass a
    # per-server ssl_shutdown_timeout, so shorten the process-wide default.
    asyncio.constants.SSL_SHUTDOWN_TIMEOUT = SHUTDOWN_TIMEOUT
    return context


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["token"]:
        token_main(argv[1:])
        return
    settings = load_settings(argv)
    configure_logging(settings.log_level, settings.log_format)
    soft_fds, hard_fds = raise_fd_limit()
    try:
        app = create_app(settings)
        ssl_context = tls_context(settings)
    except (ClientBundleMissing, OSError, ValueError, ImportError, ssl.SSLError) as exc:
        logger.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    logger.info(
        "roomrelay %s on %s://%s:%d (media: %s)",
        __version__,
        "https" if ssl_context else "http",
        settings.host,
        settings.port,
        settings.media,
    )
    log_limits(app[SERVER_KEY].sio.admission, soft_fds, hard_fds)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=IDLE_TIMEOUT,
        ssl_context=ssl_context,
    )

"""Command line entry point: ``roomrelay`` and ``python -m server``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from . import __version__
from .app import create_app
from .client_bundle import ClientBundleMissing
from .settings import load_settings

logger = logging.getLogger("roomrelay")

# Seconds aiohttp waits for open requests (websockets, long polls) when stopping.
SHUTDOWN_TIMEOUT = 1.0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # These libraries are very chatty below WARNING; keep them quiet unless debugging.
    if level != "debug":
        for noisy in ("aioice", "aiortc", "aiohttp.access", "socketio", "engineio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(argv)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except (ClientBundleMissing, FileNotFoundError, ValueError, ImportError) as exc:
        logger.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    logger.info(
        "roomrelay %s on http://%s:%d (media: %s)",
        __version__,
        settings.host,
        settings.port,
        settings.media,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )

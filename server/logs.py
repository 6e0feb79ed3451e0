"""Logging setup: readable lines by default, or one JSON object per line for collectors."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from .logthrottle import RepeatFilter, throttle_repeats

# Libraries that are very chatty below WARNING; kept quiet unless debugging.
NOISY_LOGGERS = ("aioice", "aiortc", "aiohttp.access", "socketio", "engineio")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "exc"?}`` on one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if level != "debug":
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # A client can trigger warnings at will (malformed packets, refused connections,
    # EMFILE on accept): repeats of one message are rate-limited, as are the per-event
    # refusals logged at INFO.
    throttle_repeats(logging.WARNING)
    logging.getLogger("server.events").addFilter(RepeatFilter(logging.INFO))

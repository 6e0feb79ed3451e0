#!/usr/bin/env bash
# Run the whole test suite (ruff, mypy, then pytest). Extra arguments go to one pytest
# run instead, e.g. -k chat.
# Installs what the tests need on first run: Python and npm packages, Debian's chromium,
# espeak-ng, sox, redis-server, simple-whip-client and its GStreamer plugins.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
ensure_debian chromium espeak-ng sox
# The cluster tests (REDIS_URL) start their own redis-server on a free port.
ensure_debian redis-server
# A third-party WHIP client (GStreamer) and what its pipelines and the test's shim need.
ensure_debian simple-whip-client gstreamer1.0-nice gstreamer1.0-plugins-base \
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gcc
ensure_python test
ensure_node_modules
cd "$ROOT"
log "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check . >/dev/null || { "$VENV/bin/ruff" format --diff . | head -50; exit 1; }
log "mypy"
"$VENV/bin/mypy"
if [ "$#" -gt 0 ]; then
  log "pytest $*"
  exec "$VENV/bin/python" -m pytest "$@"
fi
# Tests without WebRTC media, speech or browsers spread over every core; the rest, which
# need the CPU for codecs and timing, one at a time.
log "pytest: unit and server-level tests, on every core"
"$VENV/bin/python" -m pytest -n auto -m "not browser and not media and not speech"
log "pytest: media, speech and browser tests"
exec "$VENV/bin/python" -m pytest -m "browser or media or speech"

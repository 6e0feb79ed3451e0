#!/usr/bin/env bash
# Start roomrelay with working defaults (http://0.0.0.0:8000). Extra arguments go to the server,
# e.g. scripts/serve.sh --port 9000 --media p2p. Installs what it needs on first run.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
ensure_python
ensure_node_modules
exec "$VENV/bin/roomrelay" "$@"

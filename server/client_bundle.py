"""Serves the npm ``socket.io-client`` 4.x browser bundle, like the Node server does.

zoom-clone pages load ``/socket.io/socket.io.js`` from the server itself.
python-socketio does not ship that file, so setup installs the npm package and
we serve its ``dist`` folder; nothing of it is copied into this repository.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

REQUIRED_FILES = ("socket.io.js", "socket.io.min.js")
SERVED_FILES = (
    "socket.io.js",
    "socket.io.js.map",
    "socket.io.min.js",
    "socket.io.min.js.map",
    "socket.io.esm.min.js",
    "socket.io.esm.min.js.map",
    "socket.io.msgpack.min.js",
    "socket.io.msgpack.min.js.map",
)
CONTENT_TYPES = {".js": "application/javascript", ".map": "application/json"}


class ClientBundleMissing(RuntimeError):
    """The socket.io-client package is not installed where the settings say."""


def client_version(dist_dir: Path) -> str | None:
    package = dist_dir.parent / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def check_client_bundle(dist_dir: Path) -> str:
    """Return the bundle's version, or raise with a message that says how to fix it."""
    missing = [name for name in REQUIRED_FILES if not (dist_dir / name).is_file()]
    version = client_version(dist_dir)
    if missing or version is None or not version.startswith("4."):
        raise ClientBundleMissing(
            f"socket.io-client 4.x not found in {dist_dir} "
            f"(missing: {', '.join(missing) or 'a 4.x package.json'}). "
            "Run 'npm install' in the project folder (scripts/serve.sh does it for you) "
            "or point SOCKETIO_CLIENT_DIR / --client-dir at a socket.io-client 'dist' folder."
        )
    return version


def file_handler(path: Path, content_type: str) -> Handler:
    """Serves one file of an npm package, cacheable for an hour."""

    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})
        response.content_type = content_type
        return response

    return serve


def add_client_bundle_routes(app: web.Application, dist_dir: Path) -> str:
    """Register ``/socket.io/<bundle>`` routes; returns the client version served."""
    version = check_client_bundle(dist_dir)
    for name in SERVED_FILES:
        path = dist_dir / name
        if not path.is_file():
            continue
        app.router.add_get(f"/socket.io/{name}", file_handler(path, CONTENT_TYPES[path.suffix]))
    return version

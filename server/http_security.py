"""HTTP-level protections: allowed Host names, cross-origin rules and security headers.

- ``--allowed-hosts`` refuses requests for other host names (421), so a DNS
  rebinding page cannot talk to the server under its own name.
- ``--cors-origins`` lists other sites allowed to connect; the server's own
  origin is always allowed (the bundled page must keep working), and ``*``
  never comes with credentials.
- Every response carries nosniff, framing and referrer rules and a ``Server``
  header without versions; the bundled page also gets a Content-Security-Policy
  that allows exactly what ``static/`` uses (HSTS too when serving HTTPS).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

SERVER_NAME = "roomrelay"

# What static/ needs: its own scripts, styles and icons, the Socket.IO connection
# (same origin, polling and WebSocket), camera/microphone streams, and WebAssembly
# for the background blur's segmentation model (compiled, never eval'd script).
PAGE_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HSTS = "max-age=15552000"  # 180 days; no includeSubDomains: we do not own the subdomains

COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self)",
}


def _host_name(host: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """Whether a Host header names this server; entries without a port match any port."""
    host = host.strip().lower().rstrip(".")
    return not allowed or host in allowed or _host_name(host) in allowed


def host_guard(allowed: Collection[str]) -> Any:
    """Middleware answering 421 to requests whose Host is not in ``allowed``."""

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.host, allowed):
            return web.Response(status=421, text="unknown host name\n")
        return await handler(request)

    return check_host


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` names the host the request was sent to (any scheme).

    The scheme is not compared: behind a TLS-terminating proxy the server sees
    plain HTTP while the page's origin is https.
    """
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    host = host.lower()
    return bool(netloc) and (
        netloc == host or _host_name(netloc) == host or netloc == _host_name(host)
    )


def origin_checker(allowed: list[str]) -> Callable[[str | None, dict[str, Any]], bool]:
    """engine.io's origin test: the listed origins plus the server's own."""
    listed = {origin.lower() for origin in allowed}

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if not origin:
            return True
        return origin.lower() in listed or same_origin(origin, environ.get("HTTP_HOST", ""))

    return check


def add_security_headers(app: web.Application, page_paths: Collection[str], tls: bool) -> None:
    """Headers on every response, plus the page policy on ``page_paths``."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_NAME
        for name, value in COMMON_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path in page_paths:
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        if tls:
            response.headers.setdefault("Strict-Transport-Security", HSTS)

    app.on_response_prepare.append(on_prepare)

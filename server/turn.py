"""TURN credentials handed to clients: short-lived ones made from a shared secret.

With ``--turn-secret`` the server follows the TURN REST scheme that coturn
implements as ``use-auth-secret``: username ``<expiry unix time>:<identity>``,
credential ``base64(HMAC-SHA1(secret, username))``. The TURN server checks the
HMAC and the expiry itself, so a leaked credential stops working after
``--turn-ttl`` seconds and no long-lived password is ever given out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

TURN_SCHEMES = ("turn:", "turns:")


def _urls(server: dict[str, Any]) -> list[str]:
    urls = server.get("urls", [])
    return [urls] if isinstance(urls, str) else list(urls)


def is_turn(server: dict[str, Any]) -> bool:
    return any(url.startswith(TURN_SCHEMES) for url in _urls(server))


def turn_credentials(secret: str, identity: str, ttl: float, now: float) -> tuple[str, str]:
    """(username, credential) valid until ``now + ttl`` for the TURN REST scheme."""
    username = f"{int(now + ttl)}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class IceServerList:
    """The ICE servers given to one client: TURN entries get that client's own credentials."""

    def __init__(
        self,
        servers: tuple[dict[str, Any], ...],
        secret: str = "",
        ttl: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._servers = servers
        self._secret = secret
        self._ttl = ttl
        self._clock = clock

    def for_client(self, identity: str) -> list[dict[str, Any]]:
        """The list for a client; ``identity`` goes into the TURN username (for the logs)."""
        if not self._secret:
            return [dict(server) for server in self._servers]
        return [self._with_credentials(server, identity) for server in self._servers]

    def _with_credentials(self, server: dict[str, Any], identity: str) -> dict[str, Any]:
        if not is_turn(server) or "credential" in server:
            return dict(server)
        username, credential = turn_credentials(self._secret, identity, self._ttl, self._clock())
        return {**server, "username": username, "credential": credential}

    def for_server(self) -> tuple[dict[str, Any], ...]:
        """What the server gathers its own candidates with.

        It needs no TURN relay of its own (clients use TURN to reach it), and
        credentials made from the secret would expire while it runs.
        """
        if not self._secret:
            return self._servers
        return tuple(s for s in self._servers if not is_turn(s) or "credential" in s)

    def warn_about_static_credentials(self) -> None:
        """Static TURN passwords reach every client that joins; say so at startup."""
        static = [server for server in self._servers if is_turn(server) and "credential" in server]
        if static:
            logger.warning(
                "%d TURN server(s) configured with a static username/credential: every "
                "client that joins receives them. Prefer --turn-secret (coturn "
                "use-auth-secret) for short-lived credentials.",
                len(static),
            )
        elif self._secret and not any(is_turn(server) for server in self._servers):
            logger.warning("--turn-secret is set but --ice-servers lists no turn: URL")

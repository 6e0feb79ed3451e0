"""Access tokens and a Socket.IO client that keeps refusals, for token-server tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import socketio

from server.access import issue_token
from server.grants import claims_for

KEY = "test-key"
SECRET = "s3cret-" + "x" * 40
OTHER_SECRET = "other-" + "y" * 40


def token(
    identity: str = "alice", room: str = "*", *, secret: str = SECRET, ttl: float = 600, **grant
):
    return issue_token(KEY, secret, claims_for(identity=identity, room=room, **grant), ttl)


class Client:
    """A python-socketio client that keeps what the server sent, refusals included."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, object]] = []
        self.refusal: dict | None = None
        self.sio.on("*", lambda event, *args: self.events.append((event, args)))
        self.sio.on("connect_error", self._refused)

    def _refused(self, data) -> None:
        self.refusal = data

    async def connect(self, url: str, *, auth: dict | None = None) -> Client:
        await self.sio.connect(url, auth=auth, wait_timeout=10)
        return self

    async def call(self, event: str, *args):
        return await self.sio.call(event, tuple(args), timeout=10)

    def received(self, event: str) -> list:
        return [args for name, args in self.events if name == event]


def http_json(
    url: str, bearer: str | None = None, *, method: str = "GET", body: dict | None = None
) -> tuple[int, dict]:
    """(status, JSON body) of an HTTP request, with an optional Bearer token."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method)
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())

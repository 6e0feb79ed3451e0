"""Fixtures: real roomrelay processes on loopback, and real Socket.IO clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from server.client import RoomClient
from tests.support.access import KEY, SECRET, Client
from tests.support.clients import CLIENT_KINDS, RecordingClient
from tests.support.media import COLOURS, TONES, ColourTrack, ToneTrack
from tests.support.server import ServerProcess
from tests.support.speech import speech_maker


class ServerPool:
    """One server process per distinct set of flags, shared by the whole session."""

    def __init__(self) -> None:
        self._servers: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ServerProcess] = {}

    def get(self, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        key = (args, tuple(sorted((env or {}).items())))
        server = self._servers.get(key)
        if server is None or server.process is None or server.process.poll() is not None:
            server = ServerProcess(args=args, env=dict(env or {})).start()
            self._servers[key] = server
        return server

    def stop_all(self) -> None:
        """Interrupt every server at once, then wait for each (one by one took ~12 s)."""
        for server in self._servers.values():
            server.interrupt()
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.stop_all()


@pytest.fixture
def p2p_server(server_pool: ServerPool) -> ServerProcess:
    return server_pool.get("--media", "p2p", "--max-peers-per-room", "4")


@pytest.fixture
def room() -> Callable[[str], str]:
    """Unique room names, so tests sharing a server never meet."""
    return lambda label="room": f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=sorted(CLIENT_KINDS))
def client_kind(request: pytest.FixtureRequest) -> str:
    return request.param


ClientFactory = Callable[..., "RecordingClient"]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., object]]:
    """``await connect(server, kind)`` gives a connected client, closed after the test."""
    opened: list[RecordingClient] = []

    async def open_client(server: ServerProcess, kind: str = "python") -> RecordingClient:
        client = CLIENT_KINDS[kind]()
        await client.connect(server.url)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


@pytest.fixture
def relay_server(server_pool: ServerPool) -> ServerProcess:
    """Relay mode with the default forwarding of encoded frames."""
    return server_pool.get("--media", "relay", "--media-timeout", "5")


@pytest.fixture(params=["forward", "transcode"])
def any_relay_server(server_pool: ServerPool, request: pytest.FixtureRequest) -> ServerProcess:
    """Relay mode, once forwarding encoded frames and once with the transcoding baseline."""
    return server_pool.get(
        "--media", "relay", "--media-timeout", "5", "--forwarding", request.param
    )


@pytest.fixture
async def room_clients() -> AsyncIterator[Callable[..., object]]:
    """``await room_clients(server, room, index)``: a joined native client with identity media.

    Participant ``index`` sends ``COLOURS[index]`` video and a ``TONES[index]`` tone.
    """
    opened: list[RoomClient] = []

    async def open_client(
        server: ServerProcess,
        room_name: str,
        index: int,
        *,
        publish: bool = True,
        join: bool = True,
    ) -> RoomClient:
        client = RoomClient(server.url, nickname=f"p{index}")
        opened.append(client)
        await client.connect()
        if join:
            tracks = {"audio": ToneTrack(TONES[index]), "video": ColourTrack(COLOURS[index])}
            await client.join(room_name, **(tracks if publish else {}))
            await client.wait_connected()
        return client

    yield open_client
    for client in opened:
        await client.close()


@pytest.fixture(scope="session")
def speak(tmp_path_factory: pytest.TempPathFactory):
    """``speak(text, rate=16000)``: espeak-ng speech as mono s16le PCM."""
    return speech_maker(tmp_path_factory.mktemp("speech"))


@pytest.fixture
def token_server(server_pool: ServerPool) -> ServerProcess:
    """--auth token with one key (secret from the environment) and open rooms 'open-*'."""
    return server_pool.get(
        "--media",
        "relay",
        "--media-timeout",
        "5",
        "--auth",
        "token",
        "--api-key",
        KEY,
        "--open-rooms",
        "open-*",
        env={"API_SECRET": SECRET},
    )


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., object]]:
    """``await client(url, auth=...)``: a connected token-aware client, closed after the test."""
    opened: list[Client] = []

    async def open_client(url: str, *, auth: dict | None = None) -> Client:
        opened.append(created := Client())
        await created.connect(url, auth=auth)
        return created

    yield open_client
    for created in opened:
        await created.sio.disconnect()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session (WHIP, WHEP, the FastRTC API)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def closing() -> AsyncIterator[list]:
    """Async closers (of clients a test opened) run after the test, newest first."""
    closers: list = []
    yield closers
    for close in reversed(closers):
        await close()

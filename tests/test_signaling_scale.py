"""Signalling with hundreds of connections: who hears about rooms, and what it costs the server.

These check the shape of the fan-out, not its speed (bench/signaling_bench.py measures
that): a join tells the room list only to those who read it, room lists are coalesced
and end with the true state, the server's tasks return to their baseline, and a client
that stops reading is cut off instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import socketio

from server.fanout import FanoutManager
from tests.support.clients import PythonClient
from tests.support.polling import eventually
from tests.support.server import ServerProcess

VIDEO_PAIRS = 100  # 200 zoom-clone video-stage clients in 100 rooms
NATIVE_PAIRS = 20  # 40 native clients in 20 rooms
CHAT_ROOMS = 10  # 20 chat-stage clients in 10 rooms
FOLLOWERS = 5  # native clients in the lobby that asked for room_change
LOOKERS = 5  # native clients that asked for the list once, without following it
LOBBY = 5  # connected, nothing sent yet: could be a chat-stage lobby
COALESCE = 0.25  # server/roomlist.py's interval
QUIET = 0.6  # long enough for any coalesced room list to have arrived


@pytest.fixture
def scale_server(server_pool) -> ServerProcess:
    return server_pool.get(
        "--media",
        "p2p",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
        "--max-connections-per-ip",  # hundreds of clients, all from 127.0.0.1
        "0",
    )


@pytest.fixture
async def clients() -> AsyncIterator[list[PythonClient]]:
    opened: list[PythonClient] = []
    yield opened
    await asyncio.gather(*(client.close() for client in opened), return_exceptions=True)


async def open_clients(server: ServerProcess, opened: list[PythonClient], n: int):
    batch = [PythonClient(transports=["websocket"]) for _ in range(n)]
    opened.extend(batch)
    for start in range(0, n, 50):  # not all at once: the accept queue is finite
        await asyncio.gather(*(client.connect(server.url) for client in batch[start : start + 50]))
    return batch


def room_lists(client: PythonClient) -> list[list[str]]:
    return [args[0] for args in client.received("room_change")]


def server_tasks(server: ServerProcess) -> int:
    return server.get_json("/stats")["process"]["tasks"]


async def test_joins_send_room_lists_only_to_their_readers_coalesced(scale_server, clients):
    tag = f"s{time.monotonic_ns() % 10**8}"
    video = await open_clients(scale_server, clients, 2 * VIDEO_PAIRS)
    native = await open_clients(scale_server, clients, 2 * NATIVE_PAIRS)
    chat = await open_clients(scale_server, clients, 2 * CHAT_ROOMS)
    followers = await open_clients(scale_server, clients, FOLLOWERS)
    lookers = await open_clients(scale_server, clients, LOOKERS)
    lobby = await open_clients(scale_server, clients, LOBBY)
    for client in followers:
        assert (await client.call("list_rooms", {"follow": True}))[0]["ok"]
    for client in lookers:
        assert (await client.call("list_rooms"))[0]["ok"]
    await asyncio.sleep(QUIET)
    baseline = server_tasks(scale_server)
    for client in clients:
        client.events.clear()

    started = time.monotonic()
    await asyncio.gather(
        *(client.call("join_room", f"{tag}-v{index // 2}") for index, client in enumerate(video)),
        *(
            client.call("join_room", {"room": f"{tag}-n{index // 2}", "nickname": f"n{index}"})
            for index, client in enumerate(native)
        ),
        *(client.call("enter_room", f"{tag}-c{index // 2}") for index, client in enumerate(chat)),
    )
    joined = time.monotonic() - started
    await asyncio.sleep(QUIET)
    elapsed = time.monotonic() - started

    # Video-stage and native participants never asked for the room list: once their join
    # is acknowledged (until then they were in the lobby), they get none.
    for client in [*video, *native]:
        names = client.names()
        assert "room_change" not in names[names.index("ack:join_room") :]
    for client in lookers:
        assert client.received("room_change") == []
    # Every reader got it, ending with the true state, at most once per interval.
    true_state = sorted(entry["name"] for entry in scale_server.get_json("/rooms")["rooms"])
    mine = [name for name in true_state if name.startswith(tag)]
    assert len(mine) == VIDEO_PAIRS + NATIVE_PAIRS + CHAT_ROOMS
    most = int(elapsed / COALESCE) + 2
    for client in [*chat, *followers, *lobby]:
        lists = room_lists(client)
        assert lists and lists[-1] == true_state
        assert len(lists) <= most, (len(lists), joined, elapsed)
    # Chat-stage clients still hear their own join and their room mates.
    assert all(client.received("welcome") for client in chat[0::2])
    assert all(client.received("welcome") for client in video[0::2])

    # Nothing the joins started is still running.
    await eventually(lambda: server_tasks(scale_server) <= baseline, timeout=10)
    stats = scale_server.get_json("/stats")
    assert "AsyncServer._send_eio_packet" not in stats["process"]["tasks_by_coroutine"]
    assert stats["signaling"]["room_list_followers"] >= len(chat) + FOLLOWERS + LOBBY


async def test_following_can_be_switched_off_and_on(scale_server, connect, room):
    follower = await connect(scale_server)
    mover = await connect(scale_server)
    reply = (await follower.call("list_rooms", {"follow": True}))[0]
    assert reply["ok"] and isinstance(reply["rooms"], list)

    first = room()
    await mover.call("join_room", {"room": first})
    await follower.wait_for("room_change", where=lambda args: first in args[0])

    assert (await follower.call("list_rooms", {"follow": False}))[0]["ok"]
    await asyncio.sleep(QUIET)
    before = len(follower.received("room_change"))
    second = room()
    await mover.call("join_room", {"room": second})
    await asyncio.sleep(QUIET)
    assert len(follower.received("room_change")) == before

    # Following again while in a room of one's own also works.
    await follower.call("join_room", {"room": room()})
    await follower.call("list_rooms", {"follow": True})
    await mover.call("leave_room")
    await follower.wait_for("room_change", where=lambda args: second not in args[0])


@pytest.mark.parametrize("options", [[1], ["x"], [{"follow": "yes"}], [{}, {}]])
async def test_list_rooms_refuses_bad_options(scale_server, connect, options):
    client = await connect(scale_server)
    reply = (await client.call("list_rooms", *options))[0]
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"


@contextlib.asynccontextmanager
async def stuck_reader(server: ServerProcess, room_name: str):
    """A Socket.IO client that enters ``room_name`` and then never reads again."""
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(
            server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
            autoping=False,
        )
        assert (await socket.receive_str()).startswith("0")  # engine.io open
        await socket.send_str("40")
        assert (await socket.receive_str()).startswith("40")  # Socket.IO connect
        await socket.send_str(f'42["enter_room","{room_name}"]')
        try:
            yield socket  # from here on nothing is read: aiohttp stops reading when full
        finally:
            await socket.close()


async def test_a_client_that_stops_reading_is_disconnected_with_a_bounded_backlog(
    server_pool, connect, room
):
    server = server_pool.get(
        "--media",
        "p2p",
        "--max-queued-messages",
        "50",
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
        "--room-chat-rate",  # the room's chat budget must not stop the flood either
        "100000",
        "--ping-interval",  # the stuck reader must fall to its backlog, not to a ping
        "25",
        "--ping-timeout",
        "60",
    )
    name = room()
    talker = await connect(server)
    await talker.call("enter_room", name)
    before = server.get_json("/stats")["signaling"]["slow_readers_disconnected"]
    async with stuck_reader(server, name):
        await talker.wait_for("welcome")
        text = "x" * 4000
        for _batch in range(100):  # up to 4,000 x 4 KB: far beyond any socket buffer
            await asyncio.gather(*(talker.call("new_message", text, name) for _ in range(40)))
            if talker.received("bye"):
                break
        assert await talker.wait_for("bye") == ["Anon", 1]
    stats = server.get_json("/stats")
    assert stats["signaling"]["slow_readers_disconnected"] == before + 1
    listed = {entry["name"]: entry for entry in server.get_json("/rooms")["rooms"]}
    assert listed[name]["participants"] == 1
    # The talker is unaffected.
    assert await talker.call("new_message", "still here", name) == []


async def test_websocket_compression_is_refused_unless_enabled(server_pool, scale_server):
    """Compressing every small message cost more CPU than anything else on the relay path."""
    compressing = server_pool.get("--media", "p2p", "--websocket-compression")
    path = "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session:
        for server, expected in ((scale_server, False), (compressing, True)):
            url = server.url.replace("http", "ws") + path
            async with session.ws_connect(url, compress=15) as socket:
                assert (await socket.receive_str()).startswith("0")  # engine.io open
                assert bool(socket.compress) is expected


def test_the_manager_finds_a_connections_rooms_without_searching_them_all():
    """FanoutManager keeps each connection's rooms; python-socketio's own manager, given the
    same calls, must end up with exactly the same rooms."""
    ours, stock = FanoutManager(), socketio.AsyncManager()
    for manager in (ours, stock):
        for sid, eio_sid in (("a", "ea"), ("b", "eb")):
            manager.basic_enter_room(sid, "/", None, eio_sid=eio_sid)
            manager.basic_enter_room(sid, "/", sid, eio_sid=eio_sid)
            manager.basic_enter_room(sid, "/", "shared")
        manager.basic_enter_room("a", "/", "only-a")
        manager.pending_disconnect["/"] = ["a"]
        assert sorted(manager.get_rooms("a", "/")) == ["a", "only-a", "shared"]
        manager.basic_leave_room("a", "/", "only-a")
        manager.basic_disconnect("a", "/")
    assert (
        ours.rooms
        == stock.rooms
        == {"/": {None: {"b": "eb"}, "b": {"b": "eb"}, "shared": {"b": "eb"}}}
    )
    assert ours.pending_disconnect == stock.pending_disconnect == {}
    assert ours.get_rooms("a", "/") == stock.get_rooms("a", "/") == []
    assert sorted(ours.get_rooms("b", "/")) == sorted(stock.get_rooms("b", "/")) == ["b", "shared"]

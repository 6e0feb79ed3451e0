"""Many roomrelay nodes on one Redis (REDIS_URL): one room across nodes, as if on one.

Real parts only: a real redis-server on a free port and three roomrelay processes
on loopback; clients of every kind connect to different nodes of the same room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.clients import PythonClient
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess

NODE_ARGS = ("--media", "relay", "--media-timeout", "5")


def start_nodes(redis: RedisServer, count: int, *args: str) -> list[ServerProcess]:
    env = {"REDIS_URL": redis.url}
    return [ServerProcess(args=(*NODE_ARGS, *args), env=env).start() for _ in range(count)]


async def until(condition, timeout: float = 10.0, interval: float = 0.1) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(interval)

    await asyncio.wait_for(wait(), timeout)


def live_nodes(node: ServerProcess) -> list[dict]:
    return node.get_json("/health")["cluster"]["nodes"]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes(redis: RedisServer) -> Iterator[list[ServerProcess]]:
    """Three nodes sharing one Redis, for the tests that do not stop any of them."""
    started = start_nodes(redis, 3)
    yield started
    for node in started:
        node.stop()


async def test_presence_and_chat_reach_everyone_once_across_nodes(nodes, room):
    name = room("presence")
    await until(lambda: len(live_nodes(nodes[0])) == 3)
    ann, bob = PythonClient(), PythonClient()
    chat = PythonClient()  # the zoom-clone chat stage
    await ann.connect(nodes[0].url)
    await bob.connect(nodes[1].url)
    await chat.connect(nodes[2].url)
    try:
        (joined,) = await ann.call("join_room", {"room": name, "nickname": "Ann"})
        assert joined["ok"] and joined["participants"] == []
        await asyncio.sleep(0.3)  # Ann's node has told the others
        (joined,) = await bob.call("join_room", {"room": name, "nickname": "Bob"})
        assert [p["nickname"] for p in joined["participants"]] == ["Ann"]
        arrived = await ann.wait_for("user_joined")
        assert arrived[0]["nickname"] == "Bob" and arrived[0]["count"] == 2
        await asyncio.sleep(0.3)
        await chat.call("enter_room", name, "Cat")
        await ann.wait_for("user_joined", 2)
        await bob.wait_for("user_joined")

        await bob.call("chat_message", {"text": "hello from node 1"})
        await ann.wait_for("chat_message")
        await chat.wait_for("new_message")
        await chat.emit("new_message", "hi from node 2", name)
        await ann.wait_for("chat_message", 2)
        await bob.wait_for("chat_message")
        await asyncio.sleep(0.5)  # anything duplicated would have arrived by now
        assert [m[0]["text"] for m in ann.received("chat_message")] == [
            "hello from node 1",
            "hi from node 2",
        ]
        assert [m[0]["text"] for m in bob.received("chat_message")] == ["hi from node 2"]
        assert chat.received("new_message") == [["Bob: hello from node 1"]]
        assert [e[0]["nickname"] for e in ann.received("user_joined")] == ["Bob", "Cat"]

        for node in nodes:  # every node lists the whole room
            listed = {r["name"]: r for r in node.get_json("/rooms")["rooms"]}[name]
            assert sorted(listed["nicknames"]) == ["Ann", "Bob", "Cat"]

        await bob.close()
        left = await ann.wait_for("user_left")
        assert left[0]["nickname"] == "Bob" and left[0]["count"] == 2
        assert await chat.wait_for("bye") == ["Bob", 2]
        await asyncio.sleep(0.3)
        assert len(ann.received("user_left")) == 1
    finally:
        for client in (ann, bob, chat):
            await client.close()

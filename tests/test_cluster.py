"""Many roomrelay nodes on one Redis (REDIS_URL): one room across nodes, as if on one.

Real parts only: a real redis-server on a free port and three roomrelay processes
on loopback; clients of every kind connect to different nodes of the same room.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from server.cluster.manager import MAX_BATCH, RedisFanoutManager
from tests.support.clients import PythonClient
from tests.support.legacy_clients import VideoStageClient, WsRelayClient
from tests.support.media import (
    COLOURS,
    TONES,
    ColourTrack,
    PcmTrack,
    ToneTrack,
    identify_audio,
    identify_video,
    nearest_tone,
)
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.test_relay_media import assert_receives_exactly
from tests.test_resumption import drop
from tests.test_ws_audio import AudioSocket, spectrum_peaks

NODE_ARGS = ("--media", "relay", "--media-timeout", "5")

pytestmark = pytest.mark.slow  # a Redis and three nodes per module, more per test


def start_nodes(redis: RedisServer, count: int, *args: str) -> list[ServerProcess]:
    env = {"REDIS_URL": redis.url}
    return [ServerProcess(args=(*NODE_ARGS, *args), env=env).start() for _ in range(count)]


def stop_all(nodes: list[ServerProcess]) -> None:
    """Stop every node, then report the first that did not stop in time."""
    failures = []
    for node in nodes:
        try:
            node.stop()
        except AssertionError as failure:
            failures.append(failure)
    if failures:
        raise failures[0]


async def until(condition, timeout: float = 10.0, interval: float = 0.1) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(interval)

    await asyncio.wait_for(wait(), timeout)


def stage_tracks(index: int) -> tuple[ToneTrack, ColourTrack]:
    return ToneTrack(TONES[index]), ColourTrack(COLOURS[index])


def node_id(node: ServerProcess) -> str:
    return node.get_json("/health")["cluster"]["node"]


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
    stop_all(started)


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


async def stage_shows_someone_of(call, indexes: list[int], timeout: float = 20.0) -> int:
    """The zoom-clone client's video and audio slots carry one of ``indexes`` (the same one)."""

    async def check() -> int:
        while True:
            colour, tone = await asyncio.gather(
                identify_video(call.received("video")), identify_audio(call.received("audio"))
            )
            for index in indexes:
                if colour == COLOURS[index] and nearest_tone(tone) == TONES[index]:
                    return index

    return await asyncio.wait_for(check(), timeout)


def room_entry(node: ServerProcess, name: str) -> dict | None:
    return {r["name"]: r for r in node.get_json("/rooms")["rooms"]}.get(name)


@pytest.mark.media
async def test_media_flows_between_clients_on_three_nodes(nodes, room, room_clients):
    """Native clients on nodes 0 and 1 and a zoom-clone page on node 2 share one room whose
    media runs on one node: each receives the others, identified by colour and tone."""
    name = room("media")
    ann = await room_clients(nodes[0], name, 0)
    bob = await room_clients(nodes[1], name, 1)
    stage = VideoStageClient(nodes[2].url)
    try:
        await stage.join(name, ToneTrack(TONES[2]), ColourTrack(COLOURS[2]))
        stage_id = next(p for p in bob.peers if p != ann.peer_id)
        await asyncio.gather(
            assert_receives_exactly(ann, {bob.peer_id: 1, stage_id: 2}),
            assert_receives_exactly(bob, {ann.peer_id: 0, stage_id: 2}),
        )
        assert await stage_shows_someone_of(stage.call, [0, 1]) in (0, 1)

        def published() -> bool:
            entries = [room_entry(node, name) for node in nodes]
            return all(e and e["media"].get("publications") == 6 for e in entries)

        await until(published)
        ids = [node_id(node) for node in nodes]
        (owner,) = {room_entry(node, name)["media"]["node"] for node in nodes}
        media_rooms = {n["id"]: n["media_rooms"] for n in live_nodes(nodes[2])}
        assert [node for node, rooms in media_rooms.items() if name in rooms] == [owner]
        # Two of the three clients are on other nodes than the one their media runs on.
        owner_stats = nodes[ids.index(owner)].get_json("/stats")["media"]
        assert owner_stats["owned_rooms"] == [name] and owner_stats["remote_participants"] == 2
    finally:
        await stage.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, for a cluster of its own."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def own_nodes(own_redis: RedisServer) -> Iterator[list[ServerProcess]]:
    """Three fresh nodes (with their own Redis) for a test that kills or stops some."""
    started = start_nodes(own_redis, 3)
    yield started
    stop_all(started)


@pytest.mark.media
async def test_a_killed_node_s_room_moves_and_the_clients_elsewhere_recover(
    own_nodes, room, room_clients
):
    nodes = own_nodes
    await until(lambda: len(live_nodes(nodes[2])) == 3)
    ids = [node_id(node) for node in nodes]
    name = room("kill")
    ann = await room_clients(nodes[0], name, 0)  # first in a fresh cluster: node 0 owns it
    bob = await room_clients(nodes[1], name, 1)
    stage = VideoStageClient(nodes[2].url, new_tracks=lambda: stage_tracks(2))
    lobby = PythonClient()  # a chat-stage client on node 2
    try:
        await stage.join(name, *stage_tracks(2))
        stage_id = next(p for p in bob.peers if p != ann.peer_id)
        await assert_receives_exactly(bob, {ann.peer_id: 0, stage_id: 2})
        assert room_entry(nodes[1], name)["media"]["node"] == ids[0]
        closed: list[dict] = []
        bob.on("media_closed", closed.append)
        left: list[dict] = []
        bob.on("user_left", left.append)
        offers_before = len(stage.answers)

        await lobby.connect(nodes[2].url)
        await lobby.call("enter_room", name, "Lou")

        nodes[0].kill()
        killed = asyncio.get_running_loop().time()
        await bob.chat("while node 0 is dying")

        await until(lambda: bool(closed) and len(stage.answers) > offers_before, 15)
        assert closed[0]["reason"] == "moved to another media worker"
        await asyncio.gather(
            assert_receives_exactly(bob, {stage_id: 2}),
            stage_shows_someone_of(stage.call, [1]),
        )
        back = asyncio.get_running_loop().time() - killed
        logging.getLogger(__name__).info("media back %.2f s after the kill", back)
        await until(lambda: bool(left))
        assert [(m["peer_id"], m["reason"]) for m in left] == [(ann.peer_id, "node_lost")]
        await bob.chat("after the move")
        await lobby.wait_for("new_message", 2)
        await asyncio.sleep(0.3)
        assert lobby.received("new_message") == [
            ["p1: while node 0 is dying"],
            ["p1: after the move"],
        ]
        assert await lobby.wait_for("bye") == ["p0", 3]
        owner = room_entry(nodes[1], name)["media"]["node"]
        assert owner in ids[1:]
        for node in nodes[1:]:
            entry = room_entry(node, name)
            assert sorted(entry["nicknames"]) == ["Anon", "Lou", "p1"]
            assert [n["id"] for n in live_nodes(node)] == sorted(ids[1:])
        assert nodes[ids.index(owner)].get_json("/stats")["media"]["peer_connections"] == 2
    finally:
        await stage.close()
        await lobby.close()
    await bob.close()
    for node in nodes[1:]:  # nothing is left of the room on the survivors
        await until(lambda node=node: room_entry(node, name) is None)
        await until(lambda node=node: node.get_json("/stats")["media"]["owned_rooms"] == [])


@pytest.mark.media
async def test_the_cluster_recovers_from_a_redis_restart_without_restarting_nodes(
    own_redis, own_nodes, room, room_clients
):
    nodes = own_nodes
    await until(lambda: len(live_nodes(nodes[1])) == 3)
    name = room("redis")
    ann = await room_clients(nodes[0], name, 0)
    bob = await room_clients(nodes[1], name, 1)
    await assert_receives_exactly(ann, {bob.peer_id: 1})
    closed: list[dict] = []
    for client in (ann, bob):
        client.on("media_closed", closed.append)
    chat: list[dict] = []
    ann.on("chat_message", chat.append)

    own_redis.restart()  # empty: every key and subscription is gone

    def healthy() -> bool:
        return all(
            facts["redis"] == "ok" and len(facts["nodes"]) == 3
            for facts in (node.get_json("/health")["cluster"] for node in nodes)
        )

    await until(healthy, 15)

    async def chat_arrives() -> None:  # the Socket.IO manager subscribes again after ~1 s
        for attempt in range(40):
            await bob.chat(f"ping {attempt}")
            await asyncio.sleep(0.25)
            if chat:
                return
        raise AssertionError("chat never crossed nodes again")

    await chat_arrives()
    chat.clear()
    await bob.chat("after the restart")
    await until(lambda: bool(chat))
    await asyncio.sleep(0.3)
    assert [m["text"] for m in chat] == ["after the restart"]
    # The room kept its media node (no move, nobody's media closed), and newcomers get in.
    assert not closed
    carol = await room_clients(nodes[2], name, 2)
    await asyncio.gather(
        assert_receives_exactly(ann, {bob.peer_id: 1, carol.peer_id: 2}),
        assert_receives_exactly(carol, {ann.peer_id: 0, bob.peer_id: 1}),
    )
    assert not closed
    owners = {room_entry(node, name)["media"]["node"] for node in nodes}
    assert len(owners) == 1
    assert all(node.get_json("/stats")["media"]["moved_rooms_cluster"] == 0 for node in nodes)


@pytest.mark.media
async def test_a_node_stopped_with_sigterm_hands_its_rooms_over_first(
    own_redis, own_nodes, room, room_clients
):
    nodes = own_nodes
    await until(lambda: len(live_nodes(nodes[2])) == 3)
    ids = [node_id(node) for node in nodes]
    name = room("drain")
    ann = await room_clients(nodes[0], name, 0)  # first in a fresh cluster: node 0 owns it
    bob = await room_clients(nodes[1], name, 1)
    carol = await room_clients(nodes[2], name, 2)
    await assert_receives_exactly(bob, {ann.peer_id: 0, carol.peer_id: 2})
    assert room_entry(nodes[1], name)["media"]["node"] == ids[0]
    closed: list[dict] = []
    bob.on("media_closed", closed.append)
    left: list[dict] = []
    bob.on("user_left", left.append)

    nodes[0].process.send_signal(signal.SIGTERM)
    stopping = asyncio.get_running_loop().time()

    await until(lambda: bool(closed))
    assert closed[0]["reason"] == "moved to another media worker"
    await asyncio.gather(
        assert_receives_exactly(bob, {carol.peer_id: 2}),
        assert_receives_exactly(carol, {bob.peer_id: 1}),
    )
    back = asyncio.get_running_loop().time() - stopping
    logging.getLogger(__name__).info("media back %.2f s after SIGTERM", back)
    assert nodes[0].process.wait(30) == 0
    await until(lambda: bool(left))
    assert [(m["peer_id"], m["reason"]) for m in left] == [(ann.peer_id, "disconnect")]
    assert room_entry(nodes[2], name)["media"]["node"] in ids[1:]
    # It left the cluster itself (its heartbeat was removed, not left to expire), and the
    # other nodes drop it at their next heartbeat.
    assert own_redis.command("EXISTS", f"roomrelay:node:{ids[0]}") == b":0\r\n"
    await until(lambda: [n["id"] for n in live_nodes(nodes[1])] == sorted(ids[1:]), timeout=1.5)


async def test_p2p_signalling_crosses_nodes(own_redis, room):
    """zoom-clone pages on two p2p nodes: welcome, offer, answer and ice reach the other one."""
    p2p = start_nodes(own_redis, 2, "--media", "p2p")
    first, second = PythonClient(), PythonClient()
    try:
        await until(lambda: len(live_nodes(p2p[1])) == 2)
        name = room("p2p")
        await first.connect(p2p[0].url)
        await second.connect(p2p[1].url)
        await first.call("join_room", name)
        await asyncio.sleep(0.3)
        await second.call("join_room", name)
        await first.wait_for("welcome")
        offer = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}
        assert await first.call("offer", offer, name) == [{"ok": True}]
        assert (await second.wait_for("offer"))[0] == offer
        answer = {**offer, "type": "answer"}
        await second.call("answer", answer, name)
        assert (await first.wait_for("answer"))[0] == answer
        candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0"}
        await second.call("ice", candidate, name)
        assert (await first.wait_for("ice"))[0]["candidate"] == candidate["candidate"]
        await asyncio.sleep(0.3)
        assert len(second.received("offer")) == 1 and len(first.received("answer")) == 1
    finally:
        await first.close()
        await second.close()
        stop_all(p2p)


async def test_a_ws_client_hears_presence_from_other_nodes(nodes, room):
    """A client of the FastAPI relay's /ws (not Socket.IO) on one node, a native one on
    another: each hears the other arrive and leave."""
    name = room("ws")
    ws = await WsRelayClient(nodes[1].url).connect()
    await ws.join(name, "legacy")
    await asyncio.sleep(0.3)
    native = await PythonClient().connect(nodes[0].url)
    try:
        (joined,) = await native.call("join_room", {"room": name, "nickname": "Nat"})
        assert [p["nickname"] for p in joined["participants"]] == ["legacy"]
        arrived = await ws.wait_for("user_joined")
        assert arrived["nickname"] == "Nat" and arrived["peer_count"] == 2
        await native.close()
        gone = await ws.wait_for("user_left")
        assert gone["nickname"] == "Nat" and gone["peer_count"] == 1
        await asyncio.sleep(0.3)
        assert len(ws.of_type("user_joined")) == len(ws.of_type("user_left")) == 1
    finally:
        await native.close()
        await ws.close()


async def test_a_new_nickname_reaches_the_other_nodes_lists(nodes, room):
    await until(lambda: len(live_nodes(nodes[0])) == 3)
    name = room("rename")
    ann, bob = PythonClient(), PythonClient()
    await ann.connect(nodes[0].url)
    await bob.connect(nodes[1].url)
    try:
        await ann.call("join_room", {"room": name, "nickname": "Ann"})
        await bob.call("join_room", {"room": name, "nickname": "Bob"})
        assert await bob.call("nickname", "Robert") == [{"ok": True}]
        assert (await ann.wait_for("user_updated"))[0]["nickname"] == "Robert"
        for node in nodes:  # every node lists the new name
            await until(
                lambda node=node: sorted(room_entry(node, name)["nicknames"]) == ["Ann", "Robert"]
            )
        late = await PythonClient().connect(nodes[2].url)
        (joined,) = await late.call("join_room", {"room": name, "nickname": "Late"})
        assert sorted(p["nickname"] for p in joined["participants"]) == ["Ann", "Robert"]
        await late.close()
    finally:
        await ann.close()
        await bob.close()


async def until_hands(client, expected: list[str], timeout: float = 5.0) -> None:
    """Wait until ``client``'s node shows the room's raised hands as ``expected``: asks
    with ``raise_hand({raised: false})``, which answers the queue and changes nothing for
    a client whose hand is down."""
    hands = None
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        answer = await client.call("raise_hand", {"raised": False})
        hands = (answer[0] if isinstance(answer, list) else answer)["hands"]
        if hands == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"hands {hands}, expected {expected}")


async def test_raised_hands_queue_across_nodes(nodes, room):
    """Hands raised on different nodes form one queue, in the order they went up, on
    every node; a leave takes a hand down everywhere."""
    await until(lambda: len(live_nodes(nodes[0])) == 3)
    name = room("hands")
    ann, bob, cat = PythonClient(), PythonClient(), PythonClient()
    await ann.connect(nodes[0].url)
    await bob.connect(nodes[1].url)
    await cat.connect(nodes[2].url)
    try:
        ids = {}
        for client, nickname in ((ann, "Ann"), (bob, "Bob"), (cat, "Cat")):
            (joined,) = await client.call("join_room", {"room": name, "nickname": nickname})
            ids[nickname] = joined["peer_id"]
        await bob.call("raise_hand", {"raised": True})
        assert await ann.wait_for("hands") == [{"hands": [ids["Bob"]]}]
        await until_hands(cat, [ids["Bob"]])
        await until_hands(ann, [ids["Bob"]])
        (raised,) = await ann.call("raise_hand", {"raised": True})
        assert raised["hands"] == [ids["Bob"], ids["Ann"]]  # raised second, second in line
        await bob.wait_for("hands", where=lambda args: len(args[0]["hands"]) == 2)
        await until_hands(cat, [ids["Bob"], ids["Ann"]])

        late = await PythonClient().connect(nodes[2].url)
        (joined,) = await late.call("join_room", {"room": name, "nickname": "Late"})
        assert joined["hands"] == [ids["Bob"], ids["Ann"]]
        await late.close()

        await bob.call("leave_room")
        await until_hands(cat, [ids["Ann"]])
    finally:
        for client in (ann, bob, cat):
            await client.close()


@pytest.mark.media
async def test_nodes_with_media_workers(own_redis, room, room_clients):
    """--workers on every node: a room's media runs on one worker of one node, and clients
    of both nodes exchange identified media through it."""
    workers = start_nodes(own_redis, 2, "--workers", "2")
    try:
        await until(lambda: len(live_nodes(workers[1])) == 2)
        name = room("workers")
        ann = await room_clients(workers[0], name, 0)
        bob = await room_clients(workers[1], name, 1)
        await asyncio.gather(
            assert_receives_exactly(ann, {bob.peer_id: 1}),
            assert_receives_exactly(bob, {ann.peer_id: 0}),
        )

        def reported() -> bool:
            media = room_entry(workers[1], name)["media"]
            return media.get("publications") == 4 and "worker" in media

        await until(reported)
        media = room_entry(workers[1], name)["media"]
        assert media["node"] in {node_id(node) for node in workers}
    finally:
        stop_all(workers)


async def test_a_host_mutes_removes_locks_and_ends_across_nodes(own_redis, room):
    hosts = start_nodes(own_redis, 2, "--first-is-host")
    host, guest = PythonClient(), PythonClient()
    try:
        await until(lambda: len(live_nodes(hosts[1])) == 2)
        name = room("end")
        await host.connect(hosts[0].url)
        await guest.connect(hosts[1].url)
        (joined,) = await host.call("join_room", {"room": name, "nickname": "Host"})
        assert joined["host"] is True
        await asyncio.sleep(0.3)
        (second,) = await guest.call("join_room", {"room": name, "nickname": "Guest"})
        assert second["host"] is False  # the first one in, on any node, is the host
        (refused,) = await guest.call("end_room")
        assert refused["error"]["code"] == "forbidden"
        # The host acts on what it was told (user_joined), once its node knows the guest:
        # the emit and the member list travel on separate Redis channels.
        await until(lambda: host.received("user_joined"))
        await until(lambda: (room_entry(hosts[0], name) or {}).get("participants") == 2)
        target = {"peer_id": second["peer_id"], "kind": "audio"}
        assert await host.call("mute_participant", target) == [{"ok": True}]
        muted = await guest.wait_for("muted")
        assert muted[0] == {"kind": "audio", "muted": True, "by": "Host"}
        state = await host.wait_for("media_state")
        assert state[0]["peer_id"] == second["peer_id"] and state[0]["audio"] is False
        assert await host.call("remove_participant", target) == [{"ok": True}]
        assert (await guest.wait_for("removed"))[0]["by"] == "Host"
        assert (await host.wait_for("user_left"))[0]["reason"] == "removed"
        assert await host.call("lock_room", {"locked": True}) == [{"ok": True, "locked": True}]
        await asyncio.sleep(0.3)
        (locked,) = await guest.call("join_room", {"room": name, "nickname": "Guest"})
        assert locked["error"]["code"] == "room_locked"
        await host.call("lock_room", {"locked": False})
        await asyncio.sleep(0.3)
        await guest.call("join_room", {"room": name, "nickname": "Guest"})
        # Ended once the host's node lists the guest again (its count is what the ack says).
        await until(lambda: (room_entry(hosts[0], name) or {}).get("participants") == 2)
        (ended,) = await host.call("end_room")
        assert ended == {"ok": True, "removed": 2}
        assert (await guest.wait_for("room_ended"))[0]["by"] == "Host"
        for node in hosts:
            await until(lambda node=node: room_entry(node, name) is None)
        # The guest is out of the room: it may join another one.
        (again,) = await guest.call("join_room", {"room": room("after"), "nickname": "Guest"})
        assert again["ok"] and again["participants"] == []
    finally:
        await host.close()
        await guest.close()
        stop_all(hosts)


@pytest.fixture
def captioned_nodes(own_redis: RedisServer) -> Iterator[list[ServerProcess]]:
    """Two nodes with live captions (their own Redis)."""
    env = {"REDIS_URL": own_redis.url}
    started = [
        ServerProcess(args=(*NODE_ARGS, "--stt"), env=env).start(timeout=60) for _ in range(2)
    ]
    yield started
    stop_all(started)


@pytest.mark.media
@pytest.mark.speech
async def test_a_room_s_captions_reach_every_node(captioned_nodes, room, speak):
    """Captions are made where the room's media runs (node 0) and reach a /ws client on
    node 1; node 1 answers the transcript request with node 0's transcript and streams
    the room's live audio from node 0."""
    nodes = captioned_nodes
    await until(lambda: len(live_nodes(nodes[1])) == 2)
    name = room("captions")
    speaker, listener = WsRelayClient(nodes[0].url), WsRelayClient(nodes[1].url)
    try:
        await speaker.connect()
        await speaker.join(name, "speaker")  # first in a fresh cluster: node 0 runs the room
        await listener.connect()
        await listener.join(name, "listener")
        speech = speak("one two three four five", rate=48000) + bytes(2 * 48000 * 2)
        await speaker.start_call(PcmTrack(speech, 48000))

        def finals() -> list[dict]:
            return [m for m in listener.of_type("transcript") if m.get("final")]

        await until(finals, timeout=40)
        caption = finals()[0]
        assert caption["peer_id"] == speaker.peer_id
        assert {"one", "two", "three", "four", "five"} & set(caption["text"].split())
        assert room_entry(nodes[1], name)["media"]["node"] == node_id(nodes[0])

        entries = nodes[1].get_json(f"/rooms/{name}/transcript")["entries"]
        assert [e["text"] for e in entries if e["final"]] == [caption["text"]]
        assert nodes[0].get_json(f"/rooms/{name}/transcript")["entries"] == entries

        async with aiohttp.ClientSession() as http, AudioSocket(http, nodes[1].url) as audio:
            started = await audio.control({"type": "start_streaming", "room": name})
            assert (started["type"], started["message"]) == ("log", "streaming"), started
    finally:
        await speaker.close()
        await listener.close()


@pytest.mark.media
async def test_a_client_that_comes_back_through_another_node_keeps_its_place(
    own_redis, room, room_clients
):
    """Behind a load balancer a dropped client may reconnect to another node: its resume
    token names the node that holds its place, which hands it over. Same peer id, same
    media connection, no presence noise, chat and media carry on; the first node is clean."""
    cluster = start_nodes(own_redis, 3, "--ping-interval", "1", "--ping-timeout", "2")
    try:
        await until(lambda: all(len(live_nodes(node)) == 3 for node in cluster))
        name = room("handover")
        ann = await room_clients(cluster[0], name, 0)
        bob = await room_clients(cluster[2], name, 1)
        await asyncio.gather(
            assert_receives_exactly(ann, {bob.peer_id: 1}),
            assert_receives_exactly(bob, {ann.peer_id: 0}),
        )
        peer_id, connection, token = ann.peer_id, ann._pc, ann.resume_token
        assert token and token.startswith(node_id(cluster[0]) + "-")

        thief = PythonClient()
        await thief.connect(cluster[1].url)  # Ann is online: her place is not waiting
        (refused,) = await thief.call("join_room", {"room": name, "resume": token})
        assert refused["resumed"] is False and refused["peer_id"] != peer_id
        await thief.close()

        await ann.sio.call("raise_hand", {"raised": True})
        await drop(cluster[0], ann)
        ann.url = cluster[1].url  # the load balancer sends her elsewhere
        assert await ann.reconnect() is True
        assert ann.peer_id == peer_id and ann._pc is connection
        assert bob.peer_id in ann.peers
        assert ann.resume_token and ann.resume_token.startswith(node_id(cluster[1]) + "-")
        said = await ann.chat("still me, from another node")
        assert said["peer_id"] == peer_id and said["nickname"] == "p0"
        await bob.wait_until(lambda: bool(presence_of(bob, peer_id, "chat_message")))
        assert not presence_of(bob, peer_id, "user_left", "user_joined")
        await until_hands(bob.sio, [peer_id])  # her hand came along
        await asyncio.gather(
            assert_receives_exactly(ann, {bob.peer_id: 1}),
            assert_receives_exactly(bob, {ann.peer_id: 0}),
        )
        stats = [node.get_json("/stats")["resumptions"] for node in cluster]
        assert (stats[0]["held"], stats[0]["handed_over"]) == (0, 1)
        assert stats[1]["resumed"] == 1

        def everyone_sees_two() -> bool:
            return all((room_entry(node, name) or {}).get("participants") == 2 for node in cluster)

        await until(everyone_sees_two)
        await ann.close()  # her new node's goodbye reaches the room
        await bob.wait_until(lambda: bool(presence_of(bob, peer_id, "user_left")))
    finally:
        stop_all(cluster)


def presence_of(client, peer_id: str, *events: str) -> list:
    """The ``events`` ``client`` received about ``peer_id``."""
    return [d for e, d in client.events if e in events and d["peer_id"] == peer_id]


@pytest.mark.media
async def test_live_audio_streams_from_any_node(nodes, room, room_clients):
    """``/ws/audio`` on a node that does not run the room's media streams it from the node
    that does: one participant's tone, and the room's mix of both, as PCM."""
    name = room("live-audio")
    first = await room_clients(nodes[0], name, 1)
    second = await room_clients(nodes[1], name, 4)
    await until(lambda: (room_entry(nodes[2], name) or {}).get("media", {}).get("node"))
    owner = room_entry(nodes[2], name)["media"]["node"]
    elsewhere = next(node for node in nodes if node_id(node) != owner)
    async with (
        aiohttp.ClientSession() as http,
        AudioSocket(http, elsewhere.url) as one,
        AudioSocket(http, elsewhere.url) as mix,
    ):
        request = {"type": "start_streaming", "room": name, "peer_id": first.peer_id}
        started = await one.control(request)
        assert (started["type"], started["peer_id"]) == ("log", first.peer_id), started
        await one.pcm(0.3)  # start-up
        assert nearest_tone(spectrum_peaks(await one.pcm(1.0), 1)[0]) == TONES[1]
        assert (await mix.control({"type": "start_streaming", "room": name}))["room"] == name
        await mix.pcm(0.3)
        peaks = sorted(nearest_tone(f) for f in spectrum_peaks(await mix.pcm(1.0), 2))
        assert peaks == sorted([TONES[1], TONES[4]])
        await one.control({"type": "stop_streaming"})
    assert second.peer_id in first.peers


async def test_emits_cross_redis_in_batches_and_come_out_one_by_one(redis):
    """python-socketio's pub/sub messages go out in batches (one PUBLISH for the emits made
    while another is on its way, instead of a round trip each) and a listening node reads
    every one of them, in order."""
    sender, receiver = RedisFanoutManager(redis.url, 10), RedisFanoutManager(redis.url, 10)
    received: list[dict] = []

    async def listen() -> None:
        async for message in receiver._listen():
            received.append(message)

    listening = asyncio.create_task(listen())
    try:
        await until(lambda: receiver.connected and receiver.pubsub.subscribed)
        sent = [{"method": "emit", "event": "ice", "data": [n]} for n in range(450)]
        await asyncio.gather(*(sender._publish(message) for message in sent))
        # Batches, but none larger than MAX_BATCH (Redis's output buffer limits).
        assert -(-len(sent) // MAX_BATCH) <= sender.batches_published < len(sent)
        await until(lambda: len(received) == len(sent))
        assert received == sent
    finally:
        listening.cancel()
        for manager in (sender, receiver):
            await manager.redis.aclose()

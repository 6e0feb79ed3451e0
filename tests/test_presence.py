"""A silent zoom-clone video-stage participant is visible to everyone who can see presence."""

from __future__ import annotations

import pytest

from tests.support.clients import PythonClient


@pytest.mark.parametrize("mode", ["relay", "p2p"])
async def test_a_silent_video_stage_client_shows_up_in_counts_and_lists(server_pool, room, mode):
    server = server_pool.get("--media", mode)
    name = room("lurk")
    chat, native, lurker = PythonClient(), PythonClient(), PythonClient()
    for client in (chat, native, lurker):
        await client.connect(server.url)
    try:
        await chat.call("enter_room", name)
        await native.call("join_room", {"room": name, "nickname": "Nat"})
        await chat.wait_for("welcome")

        await lurker.call("join_room", name)  # video stage: joins, never offers

        assert await chat.wait_for("welcome", 2) == ["Anon", 3]
        joined = await native.wait_for("user_joined")
        assert joined[0]["count"] == 3 and joined[0]["nickname"] == "Anon"
        listed = {entry["name"]: entry for entry in server.get_json("/rooms")["rooms"]}[name]
        assert listed["participants"] == 3
        assert {peer["dialect"] for peer in listed["peers"]} == {"chat", "native", "video"}
        (rooms,) = await native.call("list_rooms")
        assert {"name": name, "participants": 3} in rooms["rooms"]
        late = await PythonClient().connect(server.url)
        (ack,) = await late.call("join_room", {"room": name, "nickname": "Late"})
        assert joined[0]["peer_id"] in [p["peer_id"] for p in ack["participants"]]
        await late.close()
        await native.wait_for("user_left")

        await lurker.close()
        assert await chat.wait_for("bye", 2) == ["Anon", 2]
        left = await native.wait_for("user_left", 2)
        assert left[0]["peer_id"] == joined[0]["peer_id"] and left[0]["count"] == 2
    finally:
        await chat.close()
        await native.close()


async def test_nickname_can_be_required(server_pool, room):
    server = server_pool.get("--media", "p2p", "--require-nickname")
    name = room()
    client = await PythonClient().connect(server.url)
    try:
        for event, args in (
            ("enter_room", [name]),
            ("join_room", [name]),
            ("join_room", [{"room": name}]),
        ):
            (ack,) = await client.call(event, *args)
            assert ack["error"]["code"] == "nickname_required", event
        assert name not in str(server.get_json("/rooms"))
        assert await client.call("enter_room", name, "Ada") == []  # the variant with a name
        other = await PythonClient().connect(server.url)
        await other.call("nickname", "Grace")
        assert await other.call("join_room", name) == []
        (ack,) = await (await PythonClient().connect(server.url)).call(
            "join_room", {"room": name, "nickname": "Linus"}
        )
        assert ack["ok"] is True
        await other.close()
    finally:
        await client.close()

"""Socket.IO reconnects that keep a participant's identity (issue 13): resume tokens and holds."""

from __future__ import annotations

import pytest

from bench.reconnect_storm import storm
from server.client import RoomClient
from tests.support.clients import PythonClient
from tests.support.media import COLOURS, ColourTrack, identify_video
from tests.support.polling import eventually

LOSSY = ("--media", "relay", "--ping-interval", "1", "--ping-timeout", "2")


def fall_silent(client: PythonClient | RoomClient) -> None:
    """Lose the connection the way a network does: nothing more gets through, pings included."""

    async def lost(packet) -> None:
        return None

    client.sio.eio._send_packet = lost


def resumptions(server) -> dict[str, int]:
    return server.get_json("/stats")["resumptions"]


async def drop(server, client: PythonClient | RoomClient) -> None:
    """The client's connection is lost, and the server noticed (its pings went unanswered)."""
    held = resumptions(server)["held"]
    fall_silent(client)
    await eventually(lambda: resumptions(server)["held"] == held + 1)
    del client.sio.eio._send_packet  # the network is back (for a client that reconnects)


def room_entry(server, name: str) -> dict | None:
    rooms = {entry["name"]: entry for entry in server.get_json("/rooms")["rooms"]}
    return rooms.get(name)


async def joined(server, name: str, nickname: str) -> tuple[PythonClient, dict]:
    client = await PythonClient().connect(server.url)
    (ack,) = await client.call("join_room", {"room": name, "nickname": nickname})
    return client, ack


@pytest.mark.slow
async def test_a_dropped_connection_takes_its_place_back_and_nobody_sees_it_leave(
    server_pool, room
):
    server = server_pool.get(*LOSSY)
    name = room("resume")
    ada, first = await joined(server, name, "Ada")
    grace, _ = await joined(server, name, "Grace")
    await ada.wait_for("user_joined")
    assert first["resume_token"] and first["resumed"] is False
    await ada.call("raise_hand", {"raised": True})
    before = resumptions(server)  # the server may be shared with other tests
    await drop(server, ada)
    assert room_entry(server, name)["participants"] == 2, room_entry(server, name)
    (held,) = await grace.call("raise_hand", {"raised": False})  # answers the queue
    assert held["hands"] == [first["peer_id"]]  # a held place keeps its hand up

    back = await PythonClient().connect(server.url)
    (ack,) = await back.call(
        "join_room", {"room": name, "nickname": "Someone else", "resume": first["resume_token"]}
    )
    assert ack["ok"] and ack["resumed"] is True
    assert (ack["peer_id"], ack["nickname"]) == (first["peer_id"], "Ada")
    assert [p["nickname"] for p in ack["participants"]] == ["Grace"]
    assert ack["hands"] == [first["peer_id"]]  # her hand stayed up through the drop
    (sent,) = await back.call("chat_message", {"text": "still me"})
    said = await grace.wait_for("chat_message")
    assert said[0]["peer_id"] == first["peer_id"] and sent["ok"]
    assert "user_left" not in grace.names() and grace.names().count("user_joined") == 0
    assert room_entry(server, name)["participants"] == 2
    after = resumptions(server)
    assert after["held"] == before["held"] and after["resumed"] == before["resumed"] + 1

    await back.close()  # a goodbye: leaves at once, no hold
    left = await grace.wait_for("user_left", timeout=3)
    assert left[0]["peer_id"] == first["peer_id"]
    await grace.close()


@pytest.mark.slow
async def test_a_hold_that_runs_out_is_an_ordinary_leave(server_pool, room):
    server = server_pool.get(*LOSSY, "--resume-grace", "1")
    name = room("resume")
    ada, first = await joined(server, name, "Ada")
    grace, _ = await joined(server, name, "Grace")
    fall_silent(ada)
    left = await grace.wait_for("user_left", timeout=10)
    assert left[0]["peer_id"] == first["peer_id"] and left[0]["count"] == 1
    back = await PythonClient().connect(server.url)
    (ack,) = await back.call(
        "join_room", {"room": name, "nickname": "Ada", "resume": first["resume_token"]}
    )
    assert ack["ok"] and ack["resumed"] is False and ack["peer_id"] != first["peer_id"]
    await grace.wait_for("user_joined")
    assert server.get_json("/stats")["resumptions"]["expired"] == 1
    for client in (back, grace):
        await client.close()


@pytest.mark.slow
async def test_a_token_only_takes_back_a_place_that_is_waiting_in_that_room(server_pool, room):
    server = server_pool.get(*LOSSY)
    name = room("resume")
    ada, first = await joined(server, name, "Ada")
    token = first["resume_token"]
    thief = await PythonClient().connect(server.url)
    (ack,) = await thief.call("join_room", {"room": name, "resume": token, "nickname": "T"})
    assert ack["resumed"] is False and ack["peer_id"] != first["peer_id"]  # Ada is online
    await thief.call("leave_room")

    await drop(server, ada)
    (ack,) = await thief.call("join_room", {"room": room("other"), "resume": token})
    assert ack["resumed"] is False  # another room
    for bad in (42, "spaces are not url-safe", "x" * 65):
        (refused,) = await thief.call("join_room", {"room": name, "resume": bad})
        assert refused["ok"] is False and refused["error"]["code"] in ("bad_request", "too_large")
    assert room_entry(server, name)["participants"] == 1  # Ada's held place, untouched

    (ack,) = await thief.call("leave_room")
    back = await PythonClient().connect(server.url)
    (ack,) = await back.call("join_room", {"room": name, "resume": token})
    assert ack["resumed"] is True and ack["peer_id"] == first["peer_id"]
    await back.call("leave_room")  # leaving for good ends the token
    again = await PythonClient().connect(server.url)
    (ack,) = await again.call("join_room", {"room": name, "resume": token, "nickname": "A"})
    assert ack["resumed"] is False
    for client in (thief, back, again):
        await client.close()


@pytest.mark.media
async def test_media_carries_on_through_a_signaling_drop(server_pool, room):
    server = server_pool.get(*LOSSY)
    name = room("resume")
    talker = RoomClient(server.url, nickname="talker")
    viewer = RoomClient(server.url, nickname="viewer")
    try:
        await talker.connect()
        await talker.join(name, video=ColourTrack(COLOURS[2]))
        await viewer.connect()
        await viewer.join(name)
        await viewer.wait_for_media([talker.peer_id], kinds=["video"])
        peer_id, connection = talker.peer_id, talker._pc

        await drop(server, talker)
        # The talker's media never depended on its Socket.IO connection.
        assert await identify_video(viewer.subscribe(peer_id, "video")) == COLOURS[2]
        assert await talker.reconnect() is True
        assert talker.peer_id == peer_id and talker._pc is connection
        assert viewer.peer_id in talker.peers
        await eventually(lambda: talker.connection_state == "connected")
        assert await identify_video(viewer.subscribe(peer_id, "video")) == COLOURS[2]
        assert viewer.stream_ids().get(viewer.mid_of(peer_id, "video")) == peer_id
        assert not [e for e, _ in viewer.events if e in ("user_left", "user_joined")]
    finally:
        await viewer.close()
        await talker.close()


@pytest.mark.slow
async def test_a_small_reconnect_storm_keeps_everyone(server_pool):
    """bench/reconnect_storm.py's scenario with 8 clients: identities kept, no presence noise."""
    server = server_pool.get(*LOSSY)
    result = await storm(server.url, clients=8, window=2.0)
    assert result["kept_identity"] == 8
    assert result["presence_events_seen"] == 0

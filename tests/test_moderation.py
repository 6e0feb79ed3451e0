"""Moderation end to end: hosts mute, remove, lock and end; the admin HTTP API does the same."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from server.client import RoomClient
from tests.support.access import http_json, token
from tests.support.media import COLOURS, ColourTrack, identify_video
from tests.support.metrics import scrape, value
from tests.support.polling import eventually


def admin_call(server, method: str, path: str, bearer: str | None, body: dict | None = None):
    return http_json(server.url + path, bearer, method=method, body=body)


def moderation_counts(server) -> Counter[str]:
    """``/stats``' moderation actions so far (the server is shared: compare deltas)."""
    return Counter(http_json(server.url + "/stats")[1]["moderation_actions"])


async def no_new_frame(track, seconds: float = 2.0) -> bool:
    """True when ``track`` delivers nothing for ``seconds`` (its source stopped)."""
    try:
        await asyncio.wait_for(track.recv(), seconds)
    except TimeoutError:
        return True
    return False


@pytest.mark.media
async def test_a_host_mutes_video_it_stops_reaching_the_others_and_comes_back(token_server, room):
    name = room()
    host = RoomClient(token_server.url, token=token("host", name, admin=True))
    talker = RoomClient(token_server.url, token=token("talker", name))
    viewer = RoomClient(token_server.url, token=token("viewer", name))
    told: list[dict] = []
    talker.on("muted", told.append)
    states: list[dict] = []
    viewer.on("media_state", states.append)
    clients = (host, talker, viewer)
    try:
        for index, participant in enumerate(clients):
            await participant.connect()
            await participant.join(name, video=ColourTrack(COLOURS[index]))
        await viewer.wait_for_media([host.peer_id, talker.peer_id], kinds=["video"])
        talker_video = viewer.subscribe(talker.peer_id, "video")
        assert await identify_video(talker_video) == COLOURS[1]

        reply = await host.sio.call(
            "mute_participant", {"peer_id": talker.peer_id, "kind": "video"}, timeout=10
        )
        assert reply == {"ok": True}
        await eventually(lambda: told)
        assert told[0] == {"kind": "video", "muted": True, "by": "host"}
        await eventually(lambda: states and states[-1]["video"] is False)
        # Let frames already in flight pass, then nothing more of the talker arrives,
        # while the host's video still does.
        await eventually(lambda: "video" not in viewer.peers[talker.peer_id].tracks)
        await eventually(lambda: no_new_frame(talker_video), 20)
        assert await identify_video(viewer.subscribe(host.peer_id, "video")) == COLOURS[0]
        refused = await talker.sio.call("media_state", {"video": True}, timeout=10)
        assert refused["error"]["code"] == "forbidden"

        await host.sio.call(
            "mute_participant",
            {"peer_id": talker.peer_id, "kind": "video", "muted": False},
            timeout=10,
        )
        await viewer.wait_for_media([talker.peer_id], kinds=["video"])
        assert await identify_video(viewer.subscribe(talker.peer_id, "video")) == COLOURS[1]
    finally:
        for participant in clients:
            await participant.close()


async def test_only_hosts_moderate(token_server, client, room):
    name = room()
    host = await client(token_server.url, auth={"token": token("h", name, admin=True)})
    guest = await client(token_server.url, auth={"token": token("g", name)})
    host_ack = await host.call("join_room", {"room": name})
    await guest.call("join_room", {"room": name})

    for event, payload in (
        ("mute_participant", {"peer_id": host_ack["peer_id"], "kind": "audio"}),
        ("remove_participant", {"peer_id": host_ack["peer_id"]}),
        ("lock_room", {"locked": True}),
    ):
        reply = await guest.call(event, payload)
        assert reply["error"]["code"] == "forbidden", event
    assert (await guest.call("end_room"))["error"]["code"] == "forbidden"
    bad = await host.call("mute_participant", {"peer_id": host_ack["peer_id"], "kind": "smell"})
    assert bad["error"]["code"] == "bad_request"
    assert not host.received("room_ended")


async def test_a_removed_participant_cannot_rejoin_while_the_room_is_locked(
    token_server, client, room
):
    name = room()
    host = await client(token_server.url, auth={"token": token("h", name, admin=True)})
    troll = await client(token_server.url, auth={"token": token("troll", name)})
    await host.call("join_room", {"room": name})
    troll_ack = await troll.call("join_room", {"room": name})

    assert (await host.call("lock_room", {"locked": True}))["ok"]
    assert (await host.call("remove_participant", {"peer_id": troll_ack["peer_id"]}))["ok"]
    await eventually(lambda: troll.received("removed"))
    assert troll.received("removed")[0][0]["reason"] == "removed"
    await eventually(lambda: host.received("user_left"))
    assert host.received("user_left")[-1][0]["reason"] == "removed"

    again = await troll.call("join_room", {"room": name})
    assert again["error"]["code"] == "room_locked"
    assert (await host.call("lock_room", {"locked": False}))["ok"]
    assert (await troll.call("join_room", {"room": name}))["ok"]


async def test_end_room_removes_everyone(token_server, client, room):
    name = room()
    host = await client(token_server.url, auth={"token": token("h", name, admin=True)})
    other = await client(token_server.url, auth={"token": token("o", name)})
    await host.call("join_room", {"room": name})
    await other.call("join_room", {"room": name})

    assert (await host.call("end_room")) == {"ok": True, "removed": 2}
    await eventually(lambda: other.received("room_ended"))
    assert (await other.call("list_rooms"))["rooms"] == [] or name not in {
        entry["name"] for entry in (await other.call("list_rooms"))["rooms"]
    }


async def test_first_is_host_on_an_open_server(server_pool, client, room):
    server = server_pool.get("--media", "relay", "--first-is-host")
    name = room()
    first = await client(server.url)
    second = await client(server.url)
    await first.call("join_room", {"room": name})
    await second.call("join_room", {"room": name})

    assert (await second.call("lock_room"))["error"]["code"] == "forbidden"
    assert (await first.call("lock_room"))["ok"]
    late = await client(server.url)
    assert (await late.call("join_room", {"room": name}))["error"]["code"] == "room_locked"
    await first.call("leave_room")  # the role passes to the earliest one left
    assert (await second.call("lock_room", {"locked": False}))["ok"]
    assert (await late.call("join_room", {"room": name}))["ok"]


async def test_admin_http_api(token_server, client, room):
    name = room()
    admin = token("ops", "*", admin=True)
    alice = await client(token_server.url, auth={"token": token("alice", name)})
    bob = await client(token_server.url, auth={"token": token("bob", name)})
    await alice.call("join_room", {"room": name})
    bob_id = (await bob.call("join_room", {"room": name}))["peer_id"]
    counts_before = moderation_counts(token_server)

    status, listed = admin_call(token_server, "GET", "/admin/rooms", admin)
    assert status == 200
    (entry,) = [r for r in listed["rooms"] if r["name"] == name]
    assert sorted(p["identity"] for p in entry["participants"]) == ["alice", "bob"]
    assert admin_call(token_server, "GET", "/admin/rooms", None)[0] == 401
    assert admin_call(token_server, "GET", "/admin/rooms", token("x", name))[0] == 403
    room_admin = token("roomops", name, admin=True)
    assert admin_call(token_server, "GET", "/admin/rooms", room_admin)[0] == 403
    assert admin_call(token_server, "GET", f"/admin/rooms/{name}", room_admin)[0] == 200
    assert admin_call(token_server, "GET", "/admin/rooms/nowhere", admin)[0] == 404

    status, muted = admin_call(
        token_server,
        "POST",
        f"/admin/rooms/{name}/participants/{bob_id}/mute",
        admin,
        {"kind": "audio"},
    )
    assert (status, muted) == (200, {"ok": True})
    await eventually(lambda: bob.received("muted"))
    assert bob.received("muted")[0][0] == {"kind": "audio", "muted": True, "by": "admin"}
    bad = admin_call(
        token_server,
        "POST",
        f"/admin/rooms/{name}/participants/{bob_id}/mute",
        admin,
        {"kind": 3},
    )
    assert bad[0] == 400 and bad[1]["error"] == "bad_request"

    assert admin_call(token_server, "POST", f"/admin/rooms/{name}/lock", admin, {})[1]["locked"]
    status, _ = admin_call(
        token_server, "POST", f"/admin/rooms/{name}/participants/{bob_id}/remove", admin
    )
    assert status == 200
    await eventually(lambda: bob.received("removed"))
    assert (await bob.call("join_room", {"room": name}))["error"]["code"] == "room_locked"

    status, closed = admin_call(token_server, "POST", f"/admin/rooms/{name}/close", admin)
    assert (status, closed) == (200, {"ok": True, "removed": 1})
    await eventually(lambda: alice.received("room_ended"))
    assert admin_call(token_server, "GET", f"/admin/rooms/{name}", admin)[0] == 404
    actions = Counter(mute_audio=1, lock=1, remove=1, end=1)  # the refused mute is not one
    assert moderation_counts(token_server) - counts_before == actions
    metrics = scrape(token_server.url + "/metrics")
    assert value(metrics, "roomrelay_moderation_actions_total", action="end") >= 1
    # Emptied, the room forgets its lock.
    assert (await bob.call("join_room", {"room": name}))["ok"]


def test_the_admin_api_refuses_everything_without_api_keys(p2p_server):
    status, refusal = admin_call(p2p_server, "GET", "/admin/rooms", "whatever")
    assert status == 401 and "no API keys" in refusal["message"]

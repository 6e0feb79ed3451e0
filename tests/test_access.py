"""Access tokens against a running token server: who may connect, join, publish, chat."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import jwt
import pytest
import socketio

from server.access import issue_token
from server.client import RoomClient
from server.grants import claims_for
from tests.support.access import KEY, OTHER_SECRET, SECRET, Client, http_json, token
from tests.support.media import COLOURS, ColourTrack, identify_video
from tests.support.polling import eventually
from tests.support.server import PROJECT_ROOT


async def refused(url: str, auth: dict | None) -> dict:
    """Connect with ``auth`` and return the server's refusal."""
    attempt = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await attempt.connect(url, auth=auth)
    assert attempt.refusal is not None
    return attempt.refusal["data"]


async def test_a_valid_token_joins_and_fixes_the_nickname(token_server, client, room):
    name = room()
    bob = await client(token_server.url, auth={"token": token("bob", name)})
    await bob.call("join_room", {"room": name})
    alice = await client(token_server.url, auth={"token": token("alice", name, name="Alice A.")})

    ack = await alice.call("join_room", {"room": name, "nickname": "mallory"})
    assert ack["ok"] and ack["nickname"] == "Alice A."
    assert ack["permissions"] == {"publish": True, "subscribe": True, "chat": True, "admin": False}
    renamed = await alice.call("nickname", "mallory")
    assert renamed["error"]["code"] == "forbidden"
    await asyncio.sleep(0.2)
    joined = [args[0] for args in bob.received("user_joined")]
    assert [entry["nickname"] for entry in joined] == ["Alice A."]
    assert not bob.received("user_updated")


@pytest.mark.parametrize(
    ("make_token", "code", "words"),
    [
        (lambda: token(ttl=-60), "token_expired", "expired"),
        (lambda: token(secret=OTHER_SECRET), "unauthorized", "signature"),
        (
            lambda: issue_token("nobody", SECRET, claims_for(identity="a", room="*"), 60),
            "unauthorized",
            "unknown API key",
        ),
        (lambda: "not.a.token", "unauthorized", "not a JWT"),
        (lambda: 42, "unauthorized", "string"),
    ],
)
async def test_bad_tokens_are_refused_with_a_clear_reason(token_server, make_token, code, words):
    before = token_server.get_json("/stats")["connections_total"]
    refusal = await refused(token_server.url, {"token": make_token()})
    assert refusal["code"] == code
    assert words in refusal["message"]
    after = token_server.get_json("/stats")
    assert after["connections_total"] == before
    assert after["errors_by_code"][code] >= 1


async def test_a_token_for_another_room_changes_nothing(token_server, client, room):
    mine, theirs = room("mine"), room("theirs")
    insider = await client(token_server.url, auth={"token": token("in", theirs)})
    await insider.call("join_room", {"room": theirs})
    intruder = await client(token_server.url, auth={"token": token("out", mine)})

    reply = await intruder.call("join_room", {"room": theirs})
    assert reply["error"]["code"] == "forbidden"
    assert repr(mine) in reply["error"]["message"]
    await asyncio.sleep(0.2)
    assert not insider.received("user_joined")
    assert intruder.received("error")[0][0]["code"] == "forbidden"


async def test_without_a_token_only_open_rooms_admit(token_server, client, room):
    anonymous = await client(token_server.url)
    closed = await anonymous.call("join_room", {"room": room("closed")})
    assert closed["error"]["code"] == "unauthorized"
    # A zoom-clone chat-stage client (no token possible) in an open room:
    open_room = room("open")
    await anonymous.call("enter_room", open_room, "zoomer")
    listed = {entry["name"] for entry in token_server.get_json("/rooms")["rooms"]}
    assert open_room in listed


async def test_the_token_may_come_in_the_query_string(token_server, client, room):
    name = room()
    guest = Client()
    await guest.sio.connect(
        f"{token_server.url}?token={token('q', name)}", transports=["websocket"], wait_timeout=10
    )
    try:
        assert (await guest.call("join_room", {"room": name}))["nickname"] == "q"
    finally:
        await guest.sio.disconnect()


async def test_chat_needs_can_publish_data(token_server, client, room):
    name = room()
    listener = await client(token_server.url, auth={"token": token("l", name)})
    await listener.call("join_room", {"room": name})
    muted = await client(token_server.url, auth={"token": token("m", name, can_publish_data=False)})
    await muted.call("join_room", {"room": name})

    reply = await muted.call("chat_message", {"text": "hello"})
    assert reply["error"]["code"] == "forbidden"
    await asyncio.sleep(0.2)
    assert not listener.received("chat_message")


@pytest.mark.media
async def test_publishing_without_can_publish_is_refused_and_subscribe_only_works(
    token_server, room
):
    name = room()
    publisher = RoomClient(token_server.url, nickname="p", token=token("pub", name))
    viewer = RoomClient(token_server.url, token=token("viewer", name, can_publish=False))
    errors: list[dict] = []
    viewer.on("error", errors.append)
    try:
        await publisher.connect()
        await publisher.join(name, video=ColourTrack(COLOURS[0]))
        await viewer.connect()
        await viewer.join(name, video=ColourTrack(COLOURS[1]))
        while not errors:
            await asyncio.sleep(0.05)
        assert errors[0]["code"] == "forbidden" and "publishing" in errors[0]["message"]
        assert token_server.get_json("/rooms")  # the server is fine

        await viewer.leave()
        subscriber = RoomClient(token_server.url, token=token("sub", name, can_publish=False))
        try:
            await subscriber.connect()
            await subscriber.join(name)
            await subscriber.wait_for_media([publisher.peer_id], kinds=["video"])
            colour = await identify_video(subscriber.subscribe(publisher.peer_id, "video"))
            assert colour == COLOURS[0]
        finally:
            await subscriber.close()
    finally:
        await publisher.close()
        await viewer.close()


@pytest.mark.media
async def test_a_participant_without_can_subscribe_publishes_and_is_not_asked_for_slots(
    token_server, room
):
    name = room()
    watcher = RoomClient(token_server.url, token=token("w", name))
    sender = RoomClient(token_server.url, token=token("s", name, can_subscribe=False))
    renegotiations: list[dict] = []
    sender.on("renegotiate", renegotiations.append)
    try:
        await watcher.connect()
        await watcher.join(name, video=ColourTrack(COLOURS[2]))
        await sender.connect()
        await sender.join(name, video=ColourTrack(COLOURS[3]))
        assert sender.permissions["subscribe"] is False
        await watcher.wait_for_media([sender.peer_id], kinds=["video"])
        assert await identify_video(watcher.subscribe(sender.peer_id, "video")) == COLOURS[3]
        assert not renegotiations
        assert not sender.peers[watcher.peer_id].tracks
    finally:
        await watcher.close()
        await sender.close()


def test_the_token_command_prints_a_token_the_server_accepts():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "token",
            "--room",
            "standup",
            "--identity",
            "ann",
            "--admin",
            "--ttl",
            "2h",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "API_KEY": KEY, "API_SECRET": SECRET},
        check=True,
    )
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["iss"] == KEY and claims["sub"] == "ann"
    assert claims["video"]["room"] == "standup" and claims["video"]["roomAdmin"] is True
    assert claims["exp"] - claims["nbf"] == 7200


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--auth", "token"), {}, "--auth token needs an API key"),
        (("--api-key", "k"), {"API_SECRET": "short"}, "shorter than 32 characters"),
        (("--api-keys", "k:" + SECRET + ",k:" + SECRET), {}, "given twice"),
    ],
)
def test_misconfigured_access_stops_the_server_clearly(args, env, message):
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr


def http_get(url: str, bearer: str | None = None) -> tuple[int, dict]:
    return http_json(url, bearer)


async def test_rooms_are_listed_only_to_those_who_may_see_them(token_server, client, room):
    private, public = room("private"), room("open")
    lister = await client(token_server.url, auth={"token": token("ops", "*", room_list=True)})
    member = await client(token_server.url, auth={"token": token("m", private)})
    anonymous = await client(token_server.url)
    await member.call("join_room", {"room": private})
    await member.call("list_rooms", {"follow": True})  # a native client follows on request
    await anonymous.call("enter_room", public, "zoomer")

    def latest_room_change(who: Client) -> set[str]:
        changes = who.received("room_change")
        return set(changes[-1][0]) if changes else set()

    await eventually(lambda: {private, public} <= latest_room_change(lister))
    await eventually(lambda: public in latest_room_change(member))
    await eventually(lambda: public in latest_room_change(anonymous))
    assert private in latest_room_change(member)
    assert private not in latest_room_change(anonymous)
    anonymous_list = {entry["name"] for entry in (await anonymous.call("list_rooms"))["rooms"]}
    assert public in anonymous_list and private not in anonymous_list
    lister_list = {entry["name"] for entry in (await lister.call("list_rooms"))["rooms"]}
    assert {private, public} <= lister_list

    status, listed = http_get(token_server.url + "/rooms")
    names = {entry["name"] for entry in listed["rooms"]}
    assert status == 200 and public in names and private not in names
    status, listed = http_get(token_server.url + "/rooms", bearer=token("ops", "*", room_list=True))
    assert {private, public} <= {entry["name"] for entry in listed["rooms"]}
    status, refusal = http_get(token_server.url + "/rooms", bearer=token(secret=OTHER_SECRET))
    assert status == 401 and refusal["error"] == "unauthorized"


def test_transcripts_only_for_those_who_may_see_the_room(token_server, room):
    private, public = room("private"), room("open")
    status, refusal = http_get(f"{token_server.url}/rooms/{private}/transcript")
    assert status == 403 and refusal["error"] == "forbidden"
    status, refusal = http_get(
        f"{token_server.url}/rooms/{private}/transcript", bearer=token("x", room("elsewhere"))
    )
    assert status == 403
    status, body = http_get(
        f"{token_server.url}/rooms/{private}/transcript", bearer=token("x", private)
    )
    assert status == 200 and body == {"room": private, "entries": []}
    status, body = http_get(
        f"{token_server.url}/rooms/{private}/transcript?token={token('y', private)}"
    )
    assert status == 200
    assert http_get(f"{token_server.url}/rooms/{public}/transcript")[0] == 200


async def test_hidden_participants_are_in_no_list_and_announced_nowhere(token_server, client, room):
    name = room()
    ops = token("ops", "*", room_list=True)
    visible = await client(token_server.url, auth={"token": token("v", name)})
    await visible.call("join_room", {"room": name})
    recorder = await client(token_server.url, auth={"token": token("rec", name, hidden=True)})
    assert (await recorder.call("join_room", {"room": name}))["ok"]
    late = await client(token_server.url, auth={"token": token("late", name)})

    ack = await late.call("join_room", {"room": name})
    assert [p["nickname"] for p in ack["participants"]] == ["v"]
    (listed,) = [
        r for r in http_get(token_server.url + "/rooms", ops)[1]["rooms"] if r["name"] == name
    ]
    assert sorted(listed["nicknames"]) == ["late", "v"] and listed["participants"] == 2
    await recorder.call("leave_room")
    await late.call("chat_message", {"text": "after"})  # arrives after any user_left would
    await eventually(lambda: visible.received("chat_message"))
    assert [args[0]["nickname"] for args in visible.received("user_joined")] == ["late"]
    assert not visible.received("user_left")


async def test_p2p_offers_and_answers_follow_the_grant(server_pool, room):
    """In p2p mode the server cannot see media, but it sees which way each m-line flows."""
    server = server_pool.get(
        "--media", "p2p", "--auth", "token", "--api-key", KEY, env={"API_SECRET": SECRET}
    )
    name = room()
    sending = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    )
    receiving = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n"
    )
    viewer, publisher = Client(), Client()
    await viewer.connect(server.url, auth={"token": token("v", name, can_publish=False)})
    await publisher.connect(server.url, auth={"token": token("p", name, can_subscribe=False)})
    try:
        for client in (viewer, publisher):
            await client.sio.call("join_room", name, timeout=10)
        refused = await viewer.sio.call("offer", ({"type": "offer", "sdp": sending}, name))
        assert refused["error"]["code"] == "forbidden"
        allowed = await viewer.sio.call("offer", ({"type": "offer", "sdp": receiving}, name))
        assert allowed == {"ok": True}
        refused = await publisher.sio.call("answer", ({"type": "answer", "sdp": receiving}, name))
        assert refused["error"]["code"] == "forbidden"  # it may not receive
        offers = [args for event, args in publisher.events if event == "offer"]
        assert len(offers) == 1 and offers[0][0]["sdp"] == receiving  # only the allowed one
    finally:
        await viewer.sio.disconnect()
        await publisher.sio.disconnect()

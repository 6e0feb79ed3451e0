"""Every event with wrong counts, types, sizes and garbage: a clear error, nothing else changes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

ROOM = "<room>"  # replaced by the offender's real room name
OTHER_ROOM = "<other>"  # replaced by a room the offender is not in
GOOD_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
DEEP = {"a": [[[[[[[[[[{"b": "c" * 100}]]]]]]]]]]}

CASES = [
    # event, arguments, expected error code
    ("enter_room", [], "bad_request"),
    ("enter_room", [123], "bad_request"),
    ("enter_room", [None], "bad_request"),
    ("enter_room", [""], "invalid_room_name"),
    ("enter_room", ["   "], "invalid_room_name"),
    ("enter_room", ["x" * 129], "too_large"),
    ("enter_room", ["bad\u0000name"], "invalid_room_name"),
    ("enter_room", ["a", "b", "c"], "bad_request"),
    ("enter_room", [["list"]], "bad_request"),
    ("enter_room", [b"bytes"], "bad_request"),
    ("enter_room", ["ok", 5], "bad_request"),
    ("join_room", [], "bad_request"),
    ("join_room", [42], "bad_request"),
    ("join_room", [[ROOM]], "bad_request"),
    ("join_room", [ROOM, ROOM], "bad_request"),
    ("join_room", [DEEP], "bad_request"),
    ("nickname", [], "bad_request"),
    ("nickname", [7], "bad_request"),
    ("nickname", ["n" * 65], "too_large"),
    ("nickname", ["\u200b"], "invalid_nickname"),
    ("new_message", ["hi"], "bad_request"),
    ("new_message", [5, ROOM], "bad_request"),
    ("new_message", ["", ROOM], "bad_request"),
    ("new_message", ["m" * 4097, ROOM], "too_large"),
    ("new_message", ["é" * 2049, ROOM], "too_large"),
    ("new_message", ["hi", OTHER_ROOM], "not_in_room"),
    ("new_message", ["hi", 12], "bad_request"),
    ("offer", [], "bad_request"),
    ("offer", ["sdp", ROOM], "bad_request"),
    ("offer", [{"type": "answer", "sdp": GOOD_SDP}, ROOM], "bad_request"),
    ("offer", [{"type": "offer"}, ROOM], "bad_request"),
    ("offer", [{"type": "offer", "sdp": "hello"}, ROOM], "invalid_sdp"),
    (
        "offer",
        [{"type": "offer", "sdp": GOOD_SDP, "sources": {"0": "webcam"}}, ROOM],
        "bad_request",
    ),
    ("offer", [{"type": "offer", "sdp": GOOD_SDP, "sources": ["screen"]}, ROOM], "bad_request"),
    (
        "offer",
        [{"type": "offer", "sdp": GOOD_SDP, "sources": {"m" * 33: "screen"}}, ROOM],
        "bad_request",
    ),
    ("offer", [{"type": "offer", "sdp": GOOD_SDP + "a" * 65536}, ROOM], "too_large"),
    ("offer", [{"type": "offer", "sdp": GOOD_SDP}, OTHER_ROOM], "not_in_room"),
    ("offer", [{"type": "offer", "sdp": GOOD_SDP}, ROOM, "extra"], "bad_request"),
    ("answer", [None, ROOM], "bad_request"),
    ("answer", [{"type": "offer", "sdp": GOOD_SDP}, ROOM], "bad_request"),
    ("answer", [{"type": "answer", "sdp": 5}, ROOM], "bad_request"),
    ("ice", [], "bad_request"),
    ("ice", ["candidate:1", ROOM], "bad_request"),
    ("ice", [{"candidate": "c" * 1025}, ROOM], "too_large"),
    ("ice", [{"candidate": "a", "sdpMLineIndex": "0"}, ROOM], "bad_request"),
    ("ice", [{"candidate": "a", "sdpMLineIndex": -1}, ROOM], "bad_request"),
    ("ice", [{"candidate": "a", "sdpMid": 0}, ROOM], "bad_request"),
    ("ice", [{"candidate": "a"}, OTHER_ROOM], "not_in_room"),
    ("join_room", [{"room": 5}], "bad_request"),
    ("join_room", [{"room": "x" * 129}], "too_large"),
    ("join_room", [{"room": "fine", "nickname": 5}], "bad_request"),
    ("join_room", [{"room": "fine", "nickname": "n" * 65}], "too_large"),
    ("join_room", [{}], "bad_request"),
    ("leave_room", [1], "bad_request"),
    ("chat_message", [], "bad_request"),
    ("chat_message", ["text"], "bad_request"),
    ("chat_message", [{"text": 5}], "bad_request"),
    ("chat_message", [{"text": "x" * 4097}], "too_large"),
    ("media_state", [{}], "bad_request"),
    ("media_state", [{"audio": "yes"}], "bad_request"),
    ("media_state", [[True]], "bad_request"),
    ("list_rooms", [1], "bad_request"),
    ("raise_hand", [], "bad_request"),
    ("raise_hand", [True], "bad_request"),
    ("raise_hand", [{"raised": "yes"}], "bad_request"),
    ("raise_hand", [{}], "bad_request"),
    ("reaction", [{"emoji": "<b>hi</b>"}], "bad_request"),
    ("reaction", [{"emoji": "👍" * 1000}], "bad_request"),
    ("reaction", ["👍"], "bad_request"),
    ("reaction", [{"emoji": "👍"}, 2], "bad_request"),
    ("no_such_event", [1, 2], "unknown_event"),
    ("welcome", [], "unknown_event"),
    ("room_change", [["x"]], "unknown_event"),
]


def substitute(args, room, other_room):
    replaced = []
    for arg in args:
        if arg == ROOM:
            replaced.append(room)
        elif arg == OTHER_ROOM:
            replaced.append(other_room)
        elif isinstance(arg, list):
            replaced.append(substitute(arg, room, other_room))
        else:
            replaced.append(arg)
    return replaced


@pytest.mark.parametrize(
    ("event", "args", "code"), CASES, ids=[f"{e}-{i}" for i, (e, _, _) in enumerate(CASES)]
)
async def test_bad_event_gets_error_and_changes_nothing(
    p2p_server, connect, room, event, args, code
):
    name, other = room(), room("other")
    offender = await connect(p2p_server)
    neighbour = await connect(p2p_server)
    outsider = await connect(p2p_server)
    await offender.call("join_room", name)
    await neighbour.call("join_room", name)
    await outsider.call("join_room", other)
    await offender.wait_for("welcome")
    await asyncio.sleep(0.1)
    neighbour_before, outsider_before = list(neighbour.events), list(outsider.events)
    rooms_before = p2p_server.get_json("/rooms")

    ack = await offender.call(event, *substitute(args, name, other))

    assert len(ack) == 1 and ack[0]["ok"] is False, ack
    error = ack[0]["error"]
    assert error["code"] == code, error
    assert error["event"] == event and error["message"]
    assert await offender.wait_for("error") == [error]
    await asyncio.sleep(0.2)
    assert neighbour.events == neighbour_before
    assert outsider.events == outsider_before
    assert p2p_server.get_json("/rooms") == rooms_before
    # The offender's connection still works normally afterwards.
    offer = {"type": "offer", "sdp": GOOD_SDP}
    assert await offender.call("offer", offer, name) == [{"ok": True}]
    assert await neighbour.wait_for("offer") == [offer]


async def test_room_full_is_refused_and_changes_nothing(p2p_server, connect, room):
    name = room()
    members = [await connect(p2p_server) for _ in range(4)]  # the fixture allows 4 per room
    for member in members:
        await member.call("enter_room", name)
    await members[0].wait_for("welcome", 3)
    await asyncio.sleep(0.4)  # the room lists of those joins, coalesced, arrive
    late = await connect(p2p_server)
    before = [list(member.events) for member in members]

    ack = await late.call("enter_room", name)

    assert ack[0]["ok"] is False and ack[0]["error"]["code"] == "room_full"
    assert (await late.wait_for("error"))[0]["code"] == "room_full"
    await asyncio.sleep(0.2)
    assert [member.events for member in members] == before
    listed = {entry["name"]: entry for entry in p2p_server.get_json("/rooms")["rooms"]}
    assert listed[name]["participants"] == 4


async def test_moving_to_a_full_room_keeps_the_old_room(p2p_server, connect, room):
    full, home = room("full"), room("home")
    for _ in range(4):
        await (await connect(p2p_server)).call("enter_room", full)
    mover = await connect(p2p_server)
    friend = await connect(p2p_server)
    await mover.call("enter_room", home)
    await friend.call("enter_room", home)

    ack = await mover.call("enter_room", full)

    assert ack[0]["error"]["code"] == "room_full"
    assert await mover.call("new_message", "still home", home) == []
    assert await friend.wait_for("new_message") == ["Anon: still home"]


async def test_rate_limit_refuses_floods_and_recovers(server_pool, connect, room):
    server = server_pool.get("--media", "p2p", "--rate-limit", "5", "--rate-burst", "10")
    flooder = await connect(server)
    neighbour = await connect(server)
    name = room()
    await flooder.call("enter_room", name)
    await neighbour.call("enter_room", name)
    await flooder.wait_for("welcome")

    acks = await asyncio.gather(*(flooder.call("new_message", f"m{i}", name) for i in range(40)))

    refused = [ack for ack in acks if ack and ack[0]["error"]["code"] == "rate_limited"]
    assert 20 <= len(refused) <= 31  # burst of 10, one token spent on enter_room
    await asyncio.sleep(0.3)
    assert len(neighbour.received("new_message")) == 40 - len(refused)
    assert len(flooder.received("error")) == 1  # one report per flood, not one per event
    await asyncio.sleep(1.0)
    assert await flooder.call("new_message", "calm again", name) == []


async def test_protocol_garbage_does_not_hurt_anyone(p2p_server, connect, room):
    """Malformed Socket.IO packets straight on the websocket: ignored, server unharmed."""
    name = room()
    alice = await connect(p2p_server)
    bob = await connect(p2p_server)
    await alice.call("enter_room", name)
    await bob.call("enter_room", name)
    garbage = [
        "42",
        "42[",
        "42not json",
        "42[]",
        "42[1,2]",
        '42[{"a":1}]',
        "4",
        "9",
        "40/nope,",
        '42["enter_room"',
        "\x00\xff",
        '42[null,"x"]',
        "2probe",
    ]

    ws_url = p2p_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session:
        for packet in garbage:
            async with session.ws_connect(ws_url) as ws:
                await ws.receive(timeout=5)  # engine.io open packet
                await ws.send_str("40")
                await ws.receive(timeout=5)  # socket.io connect ack
                await ws.send_str(packet)
                await asyncio.sleep(0.05)

    assert p2p_server.get_json("/health")["status"] == "ok"
    await alice.call("new_message", "fine", name)
    assert await bob.wait_for("new_message") == ["Anon: fine"]

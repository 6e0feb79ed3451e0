"""The zoom-clone video stage in p2p mode: signalling passed between browsers like the original."""

from __future__ import annotations

import asyncio

QUIET = 0.3
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host generation 0",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
}


async def joined_pair(server, connect, name, kind):
    """Two video-stage clients in ``name``; the first has seen the second's welcome."""
    caller = await connect(server, kind)
    callee = await connect(server, kind)
    await caller.emit("join_room", name)
    await asyncio.sleep(0.1)
    await callee.emit("join_room", name)
    assert await caller.wait_for("welcome") == []
    return caller, callee


async def test_welcome_has_no_arguments_and_goes_to_the_others(
    p2p_server, connect, room, client_kind
):
    _caller, callee = await joined_pair(p2p_server, connect, room(), client_kind)
    await asyncio.sleep(QUIET)
    assert callee.received("welcome") == []


async def test_offer_answer_ice_are_relayed_without_the_room_name(
    p2p_server, connect, room, client_kind
):
    name = room()
    caller, callee = await joined_pair(p2p_server, connect, name, client_kind)

    await caller.emit("offer", OFFER, name)
    assert await callee.wait_for("offer") == [OFFER]
    await callee.emit("answer", ANSWER, name)
    assert await caller.wait_for("answer") == [ANSWER]
    await caller.emit("ice", CANDIDATE, name)
    assert await callee.wait_for("ice") == [CANDIDATE]
    await callee.emit("ice", None, name)
    assert await caller.wait_for("ice") == [None]

    await asyncio.sleep(QUIET)
    assert caller.received("offer") == [] and callee.received("answer") == []


async def test_signalling_keeps_per_connection_order(p2p_server, connect, room, client_kind):
    name = room()
    caller, callee = await joined_pair(p2p_server, connect, name, client_kind)
    candidates = [
        {**CANDIDATE, "candidate": f"candidate:{n} 1 udp 1 192.0.2.1 {n} typ host"}
        for n in range(1, 30)
    ]

    await caller.emit("offer", OFFER, name)
    for candidate in candidates:
        await caller.emit("ice", candidate, name)

    await callee.wait_for("ice", len(candidates))
    relayed = [(name, args) for name, args in callee.events if name in ("offer", "ice")]
    assert relayed[0] == ("offer", [OFFER])
    assert [args[0] for _, args in relayed[1:]] == candidates


async def test_join_room_ack_variant_is_called(p2p_server, connect, room, client_kind):
    client = await connect(p2p_server, client_kind)
    assert await client.call("join_room", room()) == []


async def test_signalling_does_not_leak_to_other_rooms(p2p_server, connect, room, client_kind):
    name = room()
    caller, callee = await joined_pair(p2p_server, connect, name, client_kind)
    outsider = await connect(p2p_server, client_kind)
    await outsider.emit("join_room", room())

    await caller.emit("offer", OFFER, name)
    await callee.wait_for("offer")
    await asyncio.sleep(QUIET)
    assert not {"welcome", "offer", "answer", "ice"} & set(outsider.names())


async def test_third_participant_is_welcomed_by_both(p2p_server, connect, room, client_kind):
    name = room()
    caller, callee = await joined_pair(p2p_server, connect, name, client_kind)
    third = await connect(p2p_server, client_kind)
    await third.emit("join_room", name)
    await callee.wait_for("welcome")
    await caller.wait_for("welcome", 2)

"""The zoom-clone chat stage, exactly as the course client speaks it, from both client libraries."""

from __future__ import annotations

import asyncio

QUIET = 0.3  # seconds to wait before asserting that something did NOT arrive


async def test_enter_room_acks_with_no_arguments_before_room_change(
    p2p_server, connect, room, client_kind
):
    alice = await connect(p2p_server, client_kind)
    lobby = await connect(p2p_server, client_kind)
    name = room()

    assert await alice.call("enter_room", name) == []

    rooms = await alice.wait_for("room_change", where=lambda args: name in args[0])
    assert name in rooms[0] and alice.sid not in rooms[0]
    # The list her join caused comes after her ack (a list from other rooms' changes on this
    # shared server may come before it).
    events = [(event, args) for event, args in alice.events if event.startswith(("ack:", "room"))]
    acked = events.index(("ack:enter_room", []))
    listed = next(
        i for i, (event, args) in enumerate(events) if event == "room_change" and name in args[0]
    )
    assert acked < listed
    await lobby.wait_for("room_change", where=lambda args: name in args[0])
    assert "welcome" not in alice.names()


async def test_welcome_counts_the_newcomer_and_skips_the_sender(
    p2p_server, connect, room, client_kind
):
    alice = await connect(p2p_server, client_kind)
    bob = await connect(p2p_server, client_kind)
    name = room()
    await alice.call("enter_room", name)
    await bob.call("enter_room", name)

    assert await alice.wait_for("welcome") == ["Anon", 2]
    await asyncio.sleep(QUIET)
    assert bob.received("welcome") == []


async def test_nickname_and_messages_reach_only_the_others(p2p_server, connect, room, client_kind):
    alice = await connect(p2p_server, client_kind)
    bob = await connect(p2p_server, client_kind)
    name = room()
    await alice.call("enter_room", name)
    await bob.call("enter_room", name)
    await alice.emit("nickname", "alice")

    assert await alice.call("new_message", "hello there", name) == []
    assert await bob.wait_for("new_message") == ["alice: hello there"]
    await bob.call("new_message", "hi", name)
    assert await alice.wait_for("new_message") == ["Anon: hi"]
    await asyncio.sleep(QUIET)
    assert alice.received("new_message") == [["Anon: hi"]]
    assert bob.received("new_message") == [["alice: hello there"]]


async def test_enter_room_variant_with_nickname(p2p_server, connect, room, client_kind):
    alice = await connect(p2p_server, client_kind)
    carol = await connect(p2p_server, client_kind)
    name = room()
    await alice.call("enter_room", name)
    assert await carol.call("enter_room", name, "carol") == []
    assert await alice.wait_for("welcome") == ["carol", 2]


async def test_bye_on_disconnect_with_remaining_count(p2p_server, connect, room, client_kind):
    alice = await connect(p2p_server, client_kind)
    bob = await connect(p2p_server, client_kind)
    carol = await connect(p2p_server, client_kind)
    name = room()
    for client in (alice, bob, carol):
        await client.call("enter_room", name)
    await carol.emit("nickname", "carol")
    await asyncio.sleep(0.1)

    await carol.close()

    assert await alice.wait_for("bye") == ["carol", 2]
    assert await bob.wait_for("bye") == ["carol", 2]


async def test_empty_rooms_disappear_from_room_change(p2p_server, connect, room, client_kind):
    alice = await connect(p2p_server, client_kind)
    lobby = await connect(p2p_server, client_kind)
    name = room()
    await alice.call("enter_room", name)
    await lobby.wait_for("room_change", where=lambda args: name in args[0])

    await alice.close()

    await lobby.wait_for("room_change", where=lambda args: name not in args[0])
    listed = [entry["name"] for entry in p2p_server.get_json("/rooms")["rooms"]]
    assert name not in listed


async def test_rooms_are_isolated_and_case_sensitive(p2p_server, connect, room, client_kind):
    alice = await connect(p2p_server, client_kind)
    bob = await connect(p2p_server, client_kind)
    outsider = await connect(p2p_server, client_kind)
    name = room("Room")
    await alice.call("enter_room", name)
    await outsider.call("enter_room", name.lower())
    await bob.call("enter_room", name)
    await alice.call("new_message", "secret", name)
    await bob.wait_for("new_message")
    await bob.close()
    await alice.wait_for("bye")

    await asyncio.sleep(QUIET)
    assert outsider.received("welcome") == []
    assert outsider.received("new_message") == []
    assert outsider.received("bye") == []


async def test_messages_from_python_reach_node_and_back(p2p_server, connect, room):
    python = await connect(p2p_server, "python")
    node = await connect(p2p_server, "node")
    name = room()
    await python.call("enter_room", name, "py")
    await node.call("enter_room", name, "js")
    assert await python.wait_for("welcome") == ["js", 2]

    await python.call("new_message", "from python", name)
    await node.call("new_message", "from node", name)

    assert await node.wait_for("new_message") == ["py: from python"]
    assert await python.wait_for("new_message") == ["js: from node"]

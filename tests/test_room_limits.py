"""Server-wide caps: rooms, participants, and one room's chat from all its members together."""

from __future__ import annotations

import asyncio

from tests.support.clients import PythonClient


async def joined(server, room_name: str) -> tuple[PythonClient, dict]:
    client = await PythonClient().connect(server.url)
    (ack,) = await client.call("join_room", {"room": room_name, "nickname": "n"})
    return client, ack


async def test_rooms_and_participants_are_capped_with_clear_errors(server_pool, room):
    server = server_pool.get("--media", "p2p", "--max-rooms", "2", "--max-participants", "3")
    first, second, third = room("a"), room("b"), room("c")
    clients = []
    try:
        for name in (first, second):
            client, ack = await joined(server, name)
            clients.append(client)
            assert ack["ok"]
        client, ack = await joined(server, third)  # a third room
        clients.append(client)
        assert ack["error"]["code"] == "too_many_rooms"
        (ack,) = await client.call("join_room", {"room": first})  # an existing one is fine
        assert ack["ok"]
        client, ack = await joined(server, first)  # a fourth participant
        clients.append(client)
        assert ack["error"]["code"] == "server_full"
        await clients[1].call("leave_room")  # room b empties: room c can exist now
        (ack,) = await client.call("join_room", {"room": third})
        assert ack["ok"]
        errors = server.get_json("/stats")["errors_by_code"]
        assert errors["too_many_rooms"] == 1 and errors["server_full"] == 1
    finally:
        for client in clients:
            await client.close()


async def test_one_rooms_chat_is_bounded_across_all_its_members(server_pool, room):
    server = server_pool.get("--media", "p2p", "--room-chat-rate", "2")  # bursts of 4
    name, quiet = room("chatty"), room("quiet")
    members = [(await joined(server, name))[0] for _ in range(6)]
    neighbour, _ = await joined(server, quiet)
    try:
        replies = await asyncio.gather(
            *(m.call("chat_message", {"text": f"hi {i}"}) for i, m in enumerate(members))
        )
        codes = [reply[0].get("error", {}).get("code") for reply in replies]
        assert codes.count(None) == 4 and codes.count("rate_limited") == 2
        (reply,) = await neighbour.call("chat_message", {"text": "another room is unaffected"})
        assert reply["ok"]
        await asyncio.sleep(1.0)
        (reply,) = await members[0].call("chat_message", {"text": "calm again"})
        assert reply["ok"]
        assert server.get_json("/stats")["room_limits"]["chat_refused"] == 2
    finally:
        for client in [*members, neighbour]:
            await client.close()

"""Raised hands and reactions (native protocol) between real Socket.IO clients."""

from __future__ import annotations

import asyncio

import pytest


async def join(client, name, nickname):
    (ack,) = await client.call("join_room", {"room": name, "nickname": nickname})
    assert ack["ok"], ack
    return ack


async def test_hands_queue_in_the_order_they_were_raised(p2p_server, connect, room, client_kind):
    name = room("hands")
    ada, grace, linus = [await connect(p2p_server, client_kind) for _ in range(3)]
    ada_id = (await join(ada, name, "Ada"))["peer_id"]
    grace_id = (await join(grace, name, "Grace"))["peer_id"]

    assert await grace.call("raise_hand", {"raised": True}) == [{"ok": True, "hands": [grace_id]}]
    assert await ada.wait_for("hands") == [{"hands": [grace_id]}]
    (ack,) = await ada.call("raise_hand", {"raised": True})
    assert ack["hands"] == [grace_id, ada_id]
    assert await grace.wait_for("hands", 1) == [{"hands": [grace_id, ada_id]}]
    # Raising it again changes nothing and tells no one.
    assert (await ada.call("raise_hand", {"raised": True}))[0]["hands"] == [grace_id, ada_id]

    # Someone arriving sees the queue in the join ack.
    assert (await join(linus, name, "Linus"))["hands"] == [grace_id, ada_id]

    # Grace lowers hers: Ada is first now.
    assert (await grace.call("raise_hand", {"raised": False}))[0]["hands"] == [ada_id]
    for client in (ada, linus):
        await client.wait_for("hands", where=lambda args: args[0]["hands"] == [ada_id])

    # Leaving lowers a hand, and coming back does not raise it again.
    await ada.call("leave_room")
    await linus.wait_for("user_left")
    assert (await join(grace, name, "Grace"))["hands"] == []  # already in: the ack repeats
    (again,) = await ada.call("join_room", {"room": name, "nickname": "Ada"})
    assert again["hands"] == []
    await asyncio.sleep(0.2)
    assert all(args[0]["hands"] != [] for args in linus.received("hands"))


async def test_reactions_reach_the_others_in_order(p2p_server, connect, room, client_kind):
    name, elsewhere = room("reactions"), room("elsewhere")
    ada, grace, outsider = [await connect(p2p_server, client_kind) for _ in range(3)]
    ada_id = (await join(ada, name, "Ada"))["peer_id"]
    await join(grace, name, "Grace")
    await join(outsider, elsewhere, "Outsider")

    for emoji in ("👍", "🎉", "❤️"):
        assert await ada.call("reaction", {"emoji": emoji}) == [{"ok": True}]
    await grace.wait_for("reaction", 3)
    assert grace.received("reaction") == [
        [{"peer_id": ada_id, "emoji": emoji}] for emoji in ("👍", "🎉", "❤️")
    ]
    await asyncio.sleep(0.2)
    assert ada.received("reaction") == []
    assert outsider.received("reaction") == []


@pytest.mark.parametrize("event", ["raise_hand", "reaction"])
async def test_gestures_need_a_room(p2p_server, connect, event):
    client = await connect(p2p_server)
    payload = {"raised": True} if event == "raise_hand" else {"emoji": "👍"}
    (ack,) = await client.call(event, payload)
    assert ack["error"]["code"] == "not_in_room"


async def test_reaction_floods_are_rate_limited_like_chat(server_pool, connect, room):
    server = server_pool.get("--media", "p2p", "--rate-limit", "5", "--rate-burst", "10")
    name = room("flood")
    flooder, neighbour = await connect(server), await connect(server)
    await join(flooder, name, "Flooder")
    await join(neighbour, name, "Neighbour")

    acks = await asyncio.gather(*(flooder.call("reaction", {"emoji": "👏"}) for _ in range(40)))

    refused = [ack for (ack,) in acks if not ack["ok"]]
    assert refused and all(ack["error"]["code"] == "rate_limited" for ack in refused)
    assert len(refused) >= 25
    await asyncio.sleep(0.3)
    assert len(neighbour.received("reaction")) == 40 - len(refused)

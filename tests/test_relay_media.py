"""Relay mode with real aiortc peers: every participant gets every other's media, identified."""

from __future__ import annotations

import asyncio

import pytest

from server.client import RoomClient
from tests.support.media import (
    COLOURS,
    TONES,
    ColourTrack,
    identify_audio,
    identify_video,
    nearest_tone,
)

pytestmark = pytest.mark.media


async def announced_stream_ids_match(client, senders, timeout: float = 10.0) -> None:
    """Wait until every slot's announced MediaStream id is its publisher's peer id."""

    def matching() -> bool:
        ids = client.stream_ids()
        return all(
            ids.get(client.mid_of(peer_id, kind)) == peer_id
            for peer_id in senders
            for kind in ("audio", "video")
        )

    async def converge() -> None:
        while not matching():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(converge(), timeout)


async def assert_receives_exactly(client, senders: dict[str, int]) -> None:
    """``client`` gets video and audio from each sender (peer id -> identity index), no more."""
    await client.wait_for_media(senders)
    receiving = {peer for peer, info in client.peers.items() if info.tracks}
    assert receiving == set(senders), (receiving, set(senders))
    await announced_stream_ids_match(client, senders)
    peers = list(senders)
    colours, tones = await asyncio.gather(
        asyncio.gather(*(identify_video(client.subscribe(p, "video")) for p in peers)),
        asyncio.gather(*(identify_audio(client.subscribe(p, "audio")) for p in peers)),
    )
    for peer_id, colour, tone in zip(peers, colours, tones, strict=True):
        assert colour == COLOURS[senders[peer_id]], (peer_id, colour)
        assert nearest_tone(tone) == TONES[senders[peer_id]], (peer_id, tone)


async def test_room_of_four_each_receives_the_other_three_and_nothing_else(
    any_relay_server, room, room_clients
):
    main, other = room("main"), room("other")
    members = [await room_clients(any_relay_server, main, i) for i in range(4)]
    outsiders = [await room_clients(any_relay_server, other, i) for i in (4, 5)]

    await asyncio.gather(
        *(
            assert_receives_exactly(
                client, {m.peer_id: i for i, m in enumerate(members) if i != index}
            )
            for index, client in enumerate(members)
        ),
        assert_receives_exactly(outsiders[0], {outsiders[1].peer_id: 5}),
        assert_receives_exactly(outsiders[1], {outsiders[0].peer_id: 4}),
    )

    rooms = {entry["name"]: entry for entry in any_relay_server.get_json("/rooms")["rooms"]}
    media = rooms[main]["media"]
    assert media["publications"] == 8
    assert all(peer["connection"] == "connected" for peer in media["peers"])
    assert all(peer["receiving"] == 6 for peer in media["peers"])


async def test_late_joiner_receives_everyone_and_everyone_receives_it(
    any_relay_server, room, room_clients
):
    name = room()
    first = [await room_clients(any_relay_server, name, i) for i in range(2)]
    for a, b in ((0, 1), (1, 0)):
        await first[a].wait_for_media([first[b].peer_id])

    late = await room_clients(any_relay_server, name, 2)

    await assert_receives_exactly(late, {first[0].peer_id: 0, first[1].peer_id: 1})
    for index, client in enumerate(first):
        expected = {first[1 - index].peer_id: 1 - index, late.peer_id: 2}
        await assert_receives_exactly(client, expected)


async def test_early_leaver_disappears_and_slots_are_reused(any_relay_server, room, room_clients):
    name = room()
    clients = [await room_clients(any_relay_server, name, i) for i in range(3)]
    await clients[0].wait_for_media([clients[1].peer_id, clients[2].peer_id])

    leaver = clients[1]
    leaver_id = leaver.peer_id
    await leaver.leave()

    async def gone() -> None:
        while leaver_id in clients[0].peers or clients[0].mid_of(leaver_id, "video"):
            await asyncio.sleep(0.05)

    await asyncio.wait_for(gone(), 10)
    newcomer = await room_clients(any_relay_server, name, 3)
    await assert_receives_exactly(clients[0], {clients[2].peer_id: 2, newcomer.peer_id: 3})
    await assert_receives_exactly(newcomer, {clients[0].peer_id: 0, clients[2].peer_id: 2})
    media = any_relay_server.get_json("/stats")["media"]
    peers = {
        p["peer_id"]
        for r in any_relay_server.get_json("/rooms")["rooms"]
        for p in r["media"]["peers"]
    }
    assert leaver_id not in peers
    assert media["peer_connections"] >= 3


async def test_viewer_without_camera_receives_everyone(any_relay_server, room, room_clients):
    name = room()
    speakers = [await room_clients(any_relay_server, name, i) for i in range(2)]
    viewer = await room_clients(any_relay_server, name, 2, publish=False)

    await assert_receives_exactly(viewer, {speakers[0].peer_id: 0, speakers[1].peer_id: 1})
    await asyncio.sleep(0.5)
    assert viewer.peer_id not in {p for p, info in speakers[0].peers.items() if info.tracks}


async def test_simultaneous_joins_of_five_converge(any_relay_server, room, room_clients):
    name = room()
    clients = await asyncio.gather(*(room_clients(any_relay_server, name, i) for i in range(5)))

    for index, client in enumerate(clients):
        expected = {c.peer_id: i for i, c in enumerate(clients) if i != index}
        await client.wait_for_media(expected, timeout=30)
    await asyncio.gather(
        *(
            assert_receives_exactly(
                client, {c.peer_id: i for i, c in enumerate(clients) if i != index}
            )
            for index, client in enumerate(clients)
        )
    )


async def test_a_viewer_who_came_first_is_invited_when_someone_publishes(
    any_relay_server, room, room_clients
):
    name = room()
    viewer = await room_clients(any_relay_server, name, 0, publish=False, join=False)
    await viewer.join(name)
    assert viewer.connection_state is None  # nothing to send or receive: no connection yet
    speaker = await room_clients(any_relay_server, name, 1)

    await assert_receives_exactly(viewer, {speaker.peer_id: 1})
    assert [e for e, _ in viewer.events].count("renegotiate") >= 1


async def test_a_shared_screen_arrives_as_its_own_source_beside_the_camera(relay_server, room):
    name = room("screen")
    presenter = RoomClient(relay_server.url, nickname="presenter")
    viewer = RoomClient(relay_server.url, nickname="viewer")
    try:
        await presenter.connect()
        await presenter.join(name, video=ColourTrack(COLOURS[0]))
        await viewer.connect()
        await viewer.join(name)
        await viewer.wait_for_media([presenter.peer_id], kinds=["video"])
        await presenter.publish(ColourTrack(COLOURS[3]), source="screen")
        await viewer.wait_until(lambda: "screen" in viewer.peers[presenter.peer_id].tracks)
        assert await identify_video(viewer.subscribe(presenter.peer_id, "screen")) == COLOURS[3]
        assert await identify_video(viewer.subscribe(presenter.peer_id, "video")) == COLOURS[0]
        assert await identify_video(viewer.subscribe(presenter.peer_id, "camera")) == COLOURS[0]
    finally:
        await viewer.close()
        await presenter.close()

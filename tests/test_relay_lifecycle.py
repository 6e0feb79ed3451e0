"""Relay mode cleanup and errors: nothing of a departed participant survives, bad offers
change nothing."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from server.client import RoomClient
from tests.support.clients import PythonClient
from tests.support.media import COLOURS, identify_video
from tests.support.polling import eventually

pytestmark = pytest.mark.media


async def real_offer_sdp(kinds=("audio", "video")) -> tuple[RTCPeerConnection, str]:
    """An offer from a real aiortc peer (which the caller must close)."""
    pc = RTCPeerConnection()
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def media_of(server, room_name):
    rooms = {entry["name"]: entry for entry in server.get_json("/rooms")["rooms"]}
    return rooms[room_name]["media"] if room_name in rooms else None


def shape(peers):
    """The parts of a room's media state that only change when the room changes."""
    keys = ("peer_id", "connection", "published", "receiving_from")
    return [{key: peer[key] for key in keys} for peer in peers]


async def test_disconnect_in_the_middle_of_negotiation_leaves_nothing(
    relay_server, room, room_clients
):
    name = room()
    host = await room_clients(relay_server, name, 0)
    before = relay_server.get_json("/stats")["media"]
    pc, sdp = await real_offer_sdp()
    try:
        for _ in range(5):
            client = await PythonClient().connect(relay_server.url)
            await client.call("join_room", {"room": name, "nickname": "flaky"})
            await client.emit("offer", {"type": "offer", "sdp": sdp})
            await client.close()  # gone before the answer
    finally:
        await pc.close()

    await eventually(lambda: relay_server.get_json("/stats")["media"] == before)
    assert [p["peer_id"] for p in media_of(relay_server, name)["peers"]] == [host.peer_id]


async def test_leaving_frees_peer_connection_tracks_and_slots(relay_server, room, room_clients):
    name = room()
    stay = await room_clients(relay_server, name, 0)
    leave = await room_clients(relay_server, name, 1)
    await stay.wait_for_media([leave.peer_id])
    await leave.wait_for_media([stay.peer_id])
    leaver = leave.peer_id

    await leave.leave()

    def only_stay_remains():
        media = media_of(relay_server, name)
        return media and [p["peer_id"] for p in media["peers"]] == [stay.peer_id] and media

    media = await eventually(only_stay_remains)
    assert media["publications"] == 2
    assert media["peers"][0]["receiving"] == 0
    await eventually(lambda: leaver not in stay.peers and not stay.mid_of(leaver, "video"))
    assert ("user_left", leaver) in [(e, p.get("peer_id")) for e, p in stay.events if p]


async def test_media_timeout_closes_a_connection_that_never_comes_up(server_pool, room):
    server = server_pool.get("--media", "relay", "--media-timeout", "2")
    client = await PythonClient().connect(server.url)
    name = room()
    pc, sdp = await real_offer_sdp()
    await pc.close()  # nobody will answer the server's connectivity checks
    try:
        await client.call("join_room", {"room": name})
        await client.emit("offer", {"type": "offer", "sdp": sdp})
        await client.wait_for("answer")
        closed = await client.wait_for("media_closed", timeout=20)
        assert closed[0]["reason"] in ("media_timeout", "connection failed")
        media = media_of(server, name)
        assert media["peers"][0]["connection"] is None
        assert media["publications"] == 0
    finally:
        await client.close()


async def test_a_dropped_peer_connection_is_cleaned_up_and_rebuilt(
    relay_server, room, room_clients
):
    name = room()
    watcher = await room_clients(relay_server, name, 0)
    dropper = await room_clients(relay_server, name, 1)
    await watcher.wait_for_media([dropper.peer_id])
    stats_before = relay_server.get_json("/stats")["media"]

    await dropper._pc.close()  # the tab's connection dies; Socket.IO stays up

    await eventually(lambda: "media_closed" in [event for event, _ in dropper.events])
    reason = next(p for e, p in dropper.events if e == "media_closed")["reason"]
    assert reason == "connection closed"
    # The client builds a new connection by itself; the room converges again.
    await dropper.wait_connected()
    await watcher.wait_for_media([dropper.peer_id])
    assert await identify_video(watcher.subscribe(dropper.peer_id, "video")) == COLOURS[1]
    await eventually(lambda: relay_server.get_json("/stats")["media"] == stats_before)


async def test_join_leave_cycles_return_to_baseline(relay_server, room, room_clients):
    name = room()
    host = await room_clients(relay_server, name, 0)
    await asyncio.sleep(0.5)
    baseline = relay_server.get_json("/stats")

    async def cycle(index: int) -> None:
        client = RoomClient(relay_server.url, nickname=f"cycle{index}")
        await client.connect()
        try:
            await client.join(name)
            await client.wait_for_media([host.peer_id])
            # Leave once connected: aioice leaks a consent-check task for ~30 s when a
            # connection is closed in the middle of its ICE checks (an upstream race).
            await client.wait_connected()
            if index % 2:
                await client.leave()
        finally:
            await client.close()

    for batch in range(40):
        await asyncio.gather(*(cycle(batch * 5 + i) for i in range(5)))

    def tasks(stats):  # engine.io ends its ping tasks one ping interval after a disconnect
        return {
            k: v
            for k, v in stats["process"]["tasks_by_coroutine"].items()
            if k != "AsyncSocket._send_ping"
        }

    def settled():
        stats = relay_server.get_json("/stats")
        same = stats["media"] == baseline["media"] and tasks(stats) == tasks(baseline)
        return same and stats["connections"] == baseline["connections"] and stats

    try:
        stats = await eventually(settled, timeout=30)
    except AssertionError:
        now = relay_server.get_json("/stats")
        raise AssertionError(
            (now["media"], tasks(now), now["connections"], baseline["media"], tasks(baseline))
        ) from None
    assert stats["process"]["threads"] <= baseline["process"]["threads"] + 8  # executor pool
    assert media_of(relay_server, name)["publications"] == 2


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda sdp: "v=0\r\nthis is not sdp\r\n", "invalid_sdp"),
        (lambda sdp: sdp.replace("a=group:BUNDLE", "a=group:LS"), "unsupported_sdp"),
        (
            lambda sdp: sdp.replace("VP8/90000", "VP9/90000").replace("H264/90000", "AV1/90000"),
            "no_usable_codec",
        ),
        (lambda sdp: sdp.replace("a=ice-ufrag:", "a=x-ufrag:"), "invalid_sdp"),
        (lambda sdp: sdp.replace("a=mid:", "a=xmid:"), "invalid_sdp"),
    ],
    ids=["garbage", "no-bundle", "no-codec", "no-ice", "no-mid"],
)
async def test_bad_offers_are_refused_without_side_effects(
    relay_server, room, room_clients, mutate, code
):
    name = room()
    host = await room_clients(relay_server, name, 0)
    viewer = await room_clients(relay_server, name, 1)
    await viewer.wait_for_media([host.peer_id])
    before = media_of(relay_server, name)
    client = await PythonClient().connect(relay_server.url)
    pc, sdp = await real_offer_sdp()
    try:
        await client.call("join_room", {"room": name})
        ack = await client.call("offer", {"type": "offer", "sdp": mutate(sdp)})
        assert ack[0]["ok"] is False and ack[0]["error"]["code"] == code, ack
        assert (await client.wait_for("error"))[0]["code"] == code
        after = media_of(relay_server, name)
        assert shape(after["peers"][:2]) == shape(before["peers"][:2])
        assert len(after["peers"]) <= 2 or after["peers"][2]["connection"] is None
        assert await identify_video(viewer.subscribe(host.peer_id, "video")) == COLOURS[0]
    finally:
        await pc.close()
        await client.close()


async def test_signalling_errors_in_relay_mode(relay_server, room):
    client = await PythonClient().connect(relay_server.url)
    pc, sdp = await real_offer_sdp()
    try:
        ack = await client.call("offer", {"type": "offer", "sdp": sdp})
        assert ack[0]["error"]["code"] == "not_in_room"
        await client.call("join_room", {"room": room()})
        candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.9 9 typ host", "sdpMid": "0"}
        ack = await client.call("ice", candidate)
        assert ack[0]["error"]["code"] == "no_pending_offer"
        ack = await client.call("answer", {"type": "answer", "sdp": sdp})
        assert ack[0]["error"]["code"] == "no_pending_offer"
        assert (await client.call("offer", {"type": "offer", "sdp": sdp}))[0]["ok"] is True
        ack = await client.call("ice", {"candidate": "candidate:garbage", "sdpMid": "0"})
        assert ack[0]["error"]["code"] == "invalid_candidate"
        ack = await client.call("ice", {"candidate": candidate["candidate"]})
        assert ack[0]["error"]["code"] == "invalid_candidate"
        assert (await client.call("ice", None))[0]["ok"] is True
    finally:
        await pc.close()
        await client.close()

"""The FastAPI room relay's ``WS /ws`` clients, in the same rooms as Socket.IO clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
import pytest
from aiortc import MediaStreamTrack

from server.client import RoomClient
from tests.support.clients import PythonClient
from tests.support.legacy_clients import VideoStageClient, WsRelayClient
from tests.support.media import (
    COLOURS,
    TONES,
    ColourTrack,
    PcmTrack,
    ToneTrack,
    identify_audio,
    identify_video,
    nearest_tone,
)
from tests.support.polling import eventually
from tests.support.server import ServerProcess


@pytest.fixture
async def ws_client():
    opened: list[WsRelayClient] = []

    async def open_client(server, query: str = "") -> WsRelayClient:
        client = WsRelayClient(server.url)
        opened.append(client)
        return await client.connect(query)

    yield open_client
    for client in opened:
        await client.close()


def room_entry(server, name: str) -> dict | None:
    return next((r for r in server.get_json("/rooms")["rooms"] if r["name"] == name), None)


def presence(kind: str, peer_id: str | None, nickname: str, count: int) -> dict:
    return {"type": kind, "peer_id": peer_id, "nickname": nickname, "peer_count": count}


BAD_MESSAGES = [
    ("not json", "bad_request"),
    ("[1, 2]", "bad_request"),
    (json.dumps({"room_name": "x"}), "bad_request"),  # no type
    (json.dumps({"type": 42}), "bad_request"),
    (json.dumps({"type": "x" * 65}), "bad_request"),
    (json.dumps({"type": "shout"}), "unknown_type"),
    (json.dumps({"type": "join_room", "data": "x"}), "bad_request"),
    (json.dumps({"type": "join_room", "room_name": ""}), "invalid_room_name"),
    (json.dumps({"type": "join_room", "room_name": 5}), "bad_request"),
    (json.dumps({"type": "join_room", "room_name": "r" * 200}), "too_large"),
    (json.dumps({"type": "join_room", "room_name": "ok", "nickname": "\a"}), "invalid_nickname"),
    (json.dumps({"type": "offer", "sdp": "v=0\r\n"}), "not_in_room"),
    (json.dumps({"type": "ice_candidate", "candidate": None}), "not_in_room"),
    (json.dumps({"type": "ice_candidate"}), "bad_request"),
    (json.dumps({"type": "leave_room"}), "not_in_room"),
    (json.dumps({"type": "offer", "sdp": "x" * 90_000}), "too_large"),
]


@pytest.mark.parametrize(("message", "code"), BAD_MESSAGES)
async def test_bad_messages_get_an_error_and_change_nothing(
    relay_server, ws_client, room, message, code
):
    client = await ws_client(relay_server)
    reply = await client.request(message, "room_joined")
    assert reply["type"] == "error"
    assert reply["code"] == code, reply
    assert reply["message"]
    assert room_entry(relay_server, "ok") is None
    # The connection still works, under its default name.
    joined = await client.join(room(), "after")
    assert joined["type"] == "room_joined"
    assert joined["nickname"] == "after"


async def test_binary_frames_are_refused_and_the_socket_stays(relay_server, ws_client, room):
    client = await ws_client(relay_server)
    assert client.socket is not None
    await client.socket.send_bytes(b"\x00\x01")
    error = await client.wait_for("error")
    assert error["code"] == "bad_request"
    assert (await client.join(room(), "bin"))["type"] == "room_joined"


async def test_an_offer_in_a_data_object_with_a_wrong_sdp_type_is_refused(
    relay_server, ws_client, room
):
    client = await ws_client(relay_server)
    await client.join(room(), "typed")
    reply = await client.request(
        {"type": "offer", "data": {"type": "answer", "sdp": "v=0\r\n"}}, "answer"
    )
    assert reply["code"] == "bad_request"


async def test_presence_counts_rooms_and_leaving_across_dialects(relay_server, ws_client, room):
    name = room("ws")
    native = RoomClient(relay_server.url, nickname="native")
    await native.connect()
    try:
        await native.join(name)
        first = await ws_client(relay_server)
        joined = await first.join(name, "alice")
        assert joined["room_name"] == name
        assert joined["peer_count"] == 2
        assert joined["other_peers"] == [{"peer_id": native.peer_id, "nickname": "native"}]
        await native.wait_until(lambda: first.peer_id in native.peers)
        assert native.peers[first.peer_id].nickname == "alice"

        second = await ws_client(relay_server)
        # The same nickname twice is fine: peers are told apart by peer_id.
        joined = await second.request(
            {"type": "join_room", "data": {"room_name": name, "nickname": "alice"}}, "room_joined"
        )
        assert joined["peer_count"] == 3
        announced = await first.wait_for("user_joined")
        assert announced == presence("user_joined", second.peer_id, "alice", 3)
        entry = room_entry(relay_server, name)
        assert entry is not None and entry["participants"] == 3
        dialects = {p["peer_id"]: p["dialect"] for p in entry["peers"]}
        assert dialects[first.peer_id] == dialects[second.peer_id] == "ws"

        rooms = await first.request({"type": "get_rooms"}, "rooms")
        assert {"room_name": name, "peer_count": 3} in rooms["rooms"]

        await native.leave()
        left = await first.wait_for("user_left")
        assert left == presence("user_left", native.peer_id, "native", 2)
        assert (await second.request({"type": "leave_room"}, "room_left"))["room_name"] == name
        left = await first.wait_for("user_left", 2)
        assert left["peer_id"] == second.peer_id and left["peer_count"] == 1

        await first.close()
        await eventually(lambda: room_entry(relay_server, name) is None)
    finally:
        await native.close()


async def test_p2p_servers_refuse_ws_offers(p2p_server, ws_client, room):
    client = await ws_client(p2p_server)
    await client.join(room(), "p2p")
    reply = await client.request({"type": "offer", "sdp": "v=0\r\n"}, "answer")
    assert reply["code"] == "unsupported"


async def test_other_origins_are_refused(relay_server):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                relay_server.url + "/ws", headers={"Origin": "https://evil.example"}
            )
    assert refused.value.status == 403


async def assert_slot_carries(call, index: int) -> None:
    """The client's one video and one audio m-line carry participant ``index``."""

    async def check() -> None:
        while True:
            colour, tone = await asyncio.gather(
                identify_video(call.received("video")), identify_audio(call.received("audio"))
            )
            if colour == COLOURS[index] and nearest_tone(tone) == TONES[index]:
                return

    await asyncio.wait_for(check(), 20)


async def hears(track: Callable[[], MediaStreamTrack], index: int) -> None:
    """The audio track soon carries participant ``index``'s tone (after it starts speaking)."""

    async def check() -> None:
        while nearest_tone(await identify_audio(track())) != TONES[index]:
            pass

    await asyncio.wait_for(check(), 20)


@pytest.mark.media
async def test_ws_client_shares_a_room_with_native_and_zoomclone_clients(
    any_relay_server, ws_client, room
):
    """Everyone's media reaches everyone, identified; the /ws client follows the speaker."""
    name = room("three")
    tones = [ToneTrack(TONES[i], amplitude=0.3 if i == 0 else 0.0) for i in range(3)]
    native = RoomClient(any_relay_server.url, nickname="native")
    stage = VideoStageClient(any_relay_server.url)
    try:
        await native.connect()
        await native.join(name, audio=tones[0], video=ColourTrack(COLOURS[0]))
        await stage.join(name, tones[1], ColourTrack(COLOURS[1]))
        ws = await ws_client(any_relay_server)
        joined = await ws.join(name, "legacy")
        assert joined["peer_count"] == 3
        stage_id = next(p["peer_id"] for p in joined["other_peers"] if p["nickname"] == "Anon")
        await ws.start_call(tones[2], ColourTrack(COLOURS[2]))
        assert len(ws.of_type("answer")) == 1  # it offered once

        # The native client receives both others' video, each identified.
        await native.wait_for_media([ws.peer_id, stage_id])
        for peer_id, index in ((ws.peer_id, 2), (stage_id, 1)):
            assert await identify_video(native.subscribe(peer_id, "video")) == COLOURS[index]

        # Native speaks: the /ws and zoom-clone clients both show it.
        await asyncio.gather(assert_slot_carries(ws.call, 0), assert_slot_carries(stage.call, 0))
        # The zoom-clone client speaks: the /ws client switches without renegotiating.
        tones[0].amplitude, tones[1].amplitude = 0.0, 0.3
        await assert_slot_carries(ws.call, 1)
        await hears(lambda: native.subscribe(stage_id, "audio"), 1)
        # The /ws client speaks: the zoom-clone and native clients hear it.
        tones[1].amplitude, tones[2].amplitude = 0.0, 0.3
        await assert_slot_carries(stage.call, 2)
        await hears(lambda: native.subscribe(ws.peer_id, "audio"), 2)
        assert len(ws.of_type("answer")) == 1
        assert not ws.of_type("error"), ws.of_type("error")

        media = room_entry(any_relay_server, name)
        assert media is not None and media["media"]["publications"] == 6
    finally:
        await stage.close()
        await native.close()


@pytest.fixture(scope="module")
def captioned_server():
    server = ServerProcess(args=("--media", "relay", "--stt")).start(timeout=60)
    yield server
    server.stop()


@pytest.mark.media
@pytest.mark.speech
async def test_a_ws_participants_speech_is_captioned_for_everyone(
    captioned_server, ws_client, room, speak
):
    """The /ws client's audio reaches the tap; captions reach /ws and Socket.IO clients."""
    name = room("captions")
    listener = await PythonClient().connect(captioned_server.url)
    try:
        await listener.call("join_room", {"room": name, "nickname": "listener"})
        ws = await ws_client(captioned_server)
        await ws.join(name, "speaker")
        speech = speak("one two three four five", rate=48000) + bytes(2 * 48000 * 2)
        await ws.start_call(PcmTrack(speech, 48000))

        def final(args: list) -> bool:
            return bool(args and args[0].get("final"))

        caption = (await listener.wait_for("transcript", where=final, timeout=40))[0]
        assert caption["peer_id"] == ws.peer_id and caption["nickname"] == "speaker"
        assert {"one", "two", "three", "four", "five"} & set(caption["text"].split())
        # The /ws copy travels another way (the participant's outbox): it may come later.
        mine = await eventually(lambda: [m for m in ws.of_type("transcript") if m.get("final")])
        assert mine[0]["text"] == caption["text"]
    finally:
        await listener.close()


async def test_a_host_can_mute_and_remove_a_ws_participant(server_pool, client, ws_client, room):
    server = server_pool.get("--media", "relay", "--first-is-host")
    name = room("hosted")
    host = await client(server.url)
    await host.call("join_room", {"room": name, "nickname": "host"})
    guest = await ws_client(server)
    await guest.join(name, "guest")

    reply = await host.call("mute_participant", {"peer_id": guest.peer_id, "kind": "audio"})
    assert reply["ok"], reply
    muted = await guest.wait_for("muted")
    assert muted["kind"] == "audio" and muted["muted"] is True

    assert (await host.call("remove_participant", {"peer_id": guest.peer_id}))["ok"]
    removed = await guest.wait_for("removed")
    assert removed["room"] == name
    entry = room_entry(server, name)
    assert entry is not None and guest.peer_id not in {p["peer_id"] for p in entry["peers"]}
    assert (await guest.join(name, "guest"))["type"] == "room_joined"  # not locked: may return

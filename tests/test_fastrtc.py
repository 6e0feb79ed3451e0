"""The FastRTC backend's HTTP API: POST /webrtc/offer, the streams list, GET / as JSON."""

from __future__ import annotations

import asyncio

import pytest

from server.client import RoomClient
from tests.support.legacy_clients import CallPeer
from tests.support.media import TONES, ColourTrack, ToneTrack, identify_audio, nearest_tone


@pytest.fixture
def limited_server(server_pool):
    return server_pool.get("--media", "relay", "--max-streams", "1")


async def audio_offer(closing) -> CallPeer:
    """An aiortc peer that sends a tone and receives audio on the same m-line."""
    peer = CallPeer()
    closing.append(peer.close)
    return peer


BAD_BODIES = [
    ("text/plain", "{}", 415, "unsupported_media_type"),
    ("application/json", "not json", 400, "bad_request"),
    ("application/json", "[1]", 400, "bad_request"),
    ("application/json", '{"sdp": "v=0\\r\\n", "modality": "smell"}', 400, "bad_request"),
    ("application/json", '{"sdp": "v=0\\r\\n", "mode": "shout"}', 400, "bad_request"),
    ("application/json", '{"sdp": "hello"}', 400, "invalid_sdp"),
    ("application/json", '{"sdp": 5}', 400, "bad_request"),
    ("application/json", '{"sdp": "v=0\\r\\n", "room": ""}', 400, "invalid_room_name"),
    ("application/json", '{"sdp": "v=0\\r\\nm=audio 9 x\\r\\n"}', 400, "invalid_sdp"),
]


@pytest.mark.parametrize(("content_type", "body", "status", "code"), BAD_BODIES)
async def test_bad_offers_are_refused_in_the_backends_shape(
    relay_server, http, content_type, body, status, code
):
    url = relay_server.url + "/webrtc/offer"
    async with http.post(url, data=body, headers={"Content-Type": content_type}) as reply:
        assert reply.status == status
        answer = await reply.json()
    assert answer["status"] == "failed" and answer["error"] == code, answer
    async with http.get(relay_server.url + "/fastrtc/streams") as reply:
        assert (await reply.json())["streams"] == []


async def test_root_answers_json_to_json_clients_and_the_page_to_browsers(relay_server, http):
    async with http.get(relay_server.url + "/", headers={"Accept": "application/json"}) as reply:
        status = await reply.json()
    assert status["status"] == "running" and status["max_streams"] == 100
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    async with http.get(relay_server.url + "/", headers={"Accept": browser}) as reply:
        assert reply.content_type == "text/html"
    async with http.delete(relay_server.url + "/fastrtc/streams/nope") as reply:
        assert reply.status == 404


async def post_offer(http, server, sdp: str, **fields) -> tuple[int, dict]:
    body = {"sdp": sdp, "type": "offer", "modality": "audio", "mode": "send-receive", **fields}
    async with http.post(server.url + "/webrtc/offer", json=body) as reply:
        return reply.status, await reply.json()


@pytest.mark.media
async def test_an_audio_stream_talks_and_listens_in_a_room(relay_server, http, room, closing):
    name = room("fastrtc")
    native = RoomClient(relay_server.url, nickname="host")
    await native.connect()
    closing.append(native.close)
    await native.join(name, audio=ToneTrack(TONES[0]), video=ColourTrack((200, 30, 30)))

    peer = await audio_offer(closing)
    offer = await peer.offer(ToneTrack(TONES[4]))
    status, answer = await post_offer(http, relay_server, offer["sdp"], room=name, nickname="bot")
    assert status == 200, answer
    assert answer["status"] == "success" and answer["webrtc_id"]
    assert answer["meta"]["modality"] == "audio" and answer["meta"]["mode"] == "send-receive"
    assert answer["meta"]["room"] == name and answer["meta"]["created_at"] > 0
    await peer.accept(answer)

    async def connected() -> None:
        while peer.pc.connectionState != "connected" or "audio" not in peer.remote:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(connected(), 15)
    # The stream hears the room, and the room hears the stream.
    assert nearest_tone(await identify_audio(peer.received("audio"))) == TONES[0]
    bot = answer["peer_id"]
    await native.wait_for_media([bot], kinds=("audio",))
    assert nearest_tone(await identify_audio(native.subscribe(bot, "audio"))) == TONES[4]

    async with http.get(relay_server.url + "/fastrtc/streams") as reply:
        streams = (await reply.json())["streams"]
    mine = [s for s in streams if s["webrtc_id"] == answer["webrtc_id"]]
    assert mine and mine[0]["room"] == name and mine[0]["nickname"] == "bot"

    async with http.delete(relay_server.url + f"/fastrtc/streams/{answer['webrtc_id']}") as reply:
        assert reply.status == 200
    await native.wait_until(lambda: bot not in native.peers)
    async with http.get(relay_server.url + "/fastrtc/streams") as reply:
        ids = [s["webrtc_id"] for s in (await reply.json())["streams"]]
    assert answer["webrtc_id"] not in ids


@pytest.mark.media
async def test_max_streams_refuses_the_next_offer(limited_server, http, room, closing):
    name = room("limit")
    first = await audio_offer(closing)
    status, answer = await post_offer(
        http, limited_server, (await first.offer(ToneTrack(TONES[1])))["sdp"], room=name
    )
    assert status == 200, answer
    second = await audio_offer(closing)
    status, refused = await post_offer(
        http, limited_server, (await second.offer(ToneTrack(TONES[2])))["sdp"], room=name
    )
    assert status == 503 and refused["error"] == "too_many_streams"
    async with http.delete(limited_server.url + f"/fastrtc/streams/{answer['webrtc_id']}") as r:
        assert r.status == 200
    third = await audio_offer(closing)
    status, answer = await post_offer(
        http, limited_server, (await third.offer(ToneTrack(TONES[3])))["sdp"], room=name
    )
    assert status == 200, answer


async def test_a_video_offer_is_refused_for_an_audio_modality(relay_server, http, closing):
    peer = await audio_offer(closing)
    offer = await peer.offer(ToneTrack(TONES[1]), ColourTrack((30, 200, 40)))
    status, refused = await post_offer(http, relay_server, offer["sdp"])
    assert status == 400 and "video" in refused["message"]

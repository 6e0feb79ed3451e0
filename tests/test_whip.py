"""WHIP ingest and WHEP egress: RFC 9725's status codes and headers, and media through a room."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from server.client import RoomClient
from tests.support.access import KEY, SECRET, token
from tests.support.legacy_clients import CallPeer
from tests.support.media import (
    COLOURS,
    TONES,
    ColourTrack,
    ToneTrack,
    colour_matches,
    identify_audio,
    identify_video,
    mean_colour,
    nearest_tone,
)
from tests.support.server import ServerProcess

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"


async def offer_sdp(*, send: bool) -> tuple[RTCPeerConnection, str]:
    """A real aiortc offer: sendonly audio+video (WHIP) or recvonly (WHEP)."""
    pc = RTCPeerConnection()
    if send:
        pc.addTransceiver(ToneTrack(TONES[0]), direction="sendonly")
        pc.addTransceiver(ColourTrack(COLOURS[0]), direction="sendonly")
    else:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


@pytest.fixture
async def peers():
    opened: list[RTCPeerConnection] = []
    yield opened
    for pc in opened:
        await pc.close()


def people(server: ServerProcess, room: str, bearer: str = "") -> list[dict]:
    rooms = server.get_json("/rooms" + (f"?token={bearer}" if bearer else ""))["rooms"]
    entry = next((r for r in rooms if r["name"] == room), None)
    return entry["peers"] if entry else []


# (method, path suffix, content type, body, expected status, header that must be present)
PLAIN_CASES = [
    ("POST", "/whip/r", "text/plain", "v=0\r\n", 415, "Accept-Post"),
    ("POST", "/whip/r", "application/json", "{}", 415, "Accept-Post"),
    ("POST", "/whip/r", SDP, "hello", 400, None),
    ("POST", "/whip/r", SDP, "v=0\r\nm=garbage\r\n", 400, None),
    ("POST", "/whip/r", SDP, "v=0\r\n" + "a=x\r\n" * 20000, 413, None),
    ("POST", "/whep/r", SDP, "", 400, None),
    ("OPTIONS", "/whip/r", None, None, 204, "Accept-Post"),
    ("OPTIONS", "/whep/r", None, None, 204, "Accept-Post"),
    ("GET", "/whip/r", None, None, 405, None),
    ("PATCH", "/whip/r/nosuchsession", TRICKLE, "a=end-of-candidates\r\n", 404, None),
    ("DELETE", "/whep/r/nosuchsession", None, None, 404, None),
]


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "status", "header"), PLAIN_CASES
)
async def test_status_codes_of_requests_that_need_no_offer(
    relay_server, http, method, path, content_type, body, status, header
):
    headers = {"Content-Type": content_type} if content_type else {}
    async with http.request(method, relay_server.url + path, data=body, headers=headers) as reply:
        assert reply.status == status, await reply.text()
        if header:
            assert header in reply.headers
        if status >= 400 and method != "GET":
            assert (await reply.json())["message"]
    assert people(relay_server, "r") == []


async def test_options_answers_cors_for_browsers(relay_server, http):
    headers = {"Origin": "https://player.example", "Access-Control-Request-Method": "POST"}
    async with http.options(relay_server.url + "/whep/r", headers=headers) as reply:
        assert reply.status == 204
        assert reply.headers["Accept-Post"] == SDP
        assert "POST" in reply.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in reply.headers["Access-Control-Allow-Headers"]
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in reply.headers["Access-Control-Expose-Headers"]


async def test_link_headers_name_the_ice_servers(server_pool, http):
    servers = [{"urls": "turn:127.0.0.1:3478", "username": "u", "credential": "p"}]
    server = server_pool.get("--media", "relay", env={"ICE_SERVERS": json.dumps(servers)})
    async with http.options(server.url + "/whip/r") as reply:
        links = reply.headers.getall("Link")
    assert links == [
        '<turn:127.0.0.1:3478>; rel="ice-server"; username="u"; credential="p"; '
        'credential-type="password"'
    ]


@pytest.mark.parametrize(
    ("path", "send", "status"),
    [("/whip/{room}", False, 400), ("/whep/{room}", True, 400)],
    ids=["whip-recvonly", "whep-sendonly"],
)
async def test_offers_in_the_wrong_direction_are_refused(
    relay_server, http, peers, room, path, send, status
):
    pc, sdp = await offer_sdp(send=send)
    peers.append(pc)
    name = room()
    url = relay_server.url + path.format(room=name)
    async with http.post(url, data=sdp, headers={"Content-Type": SDP}) as reply:
        assert reply.status == status
    assert people(relay_server, name) == []


async def test_p2p_servers_refuse_whip(p2p_server, http, peers, room):
    pc, sdp = await offer_sdp(send=True)
    peers.append(pc)
    name = room()
    url = p2p_server.url + f"/whip/{name}"
    async with http.post(url, data=sdp, headers={"Content-Type": SDP}) as reply:
        assert reply.status == 501
    assert people(p2p_server, name) == []


async def post_offer(http, url: str, sdp: str, bearer: str | None = None):
    headers = {"Content-Type": SDP}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    async with http.post(url, data=sdp, headers=headers) as reply:
        return reply.status, reply.headers.copy(), await reply.text()


@pytest.mark.media
async def test_a_session_lives_from_post_to_delete(relay_server, http, peers, room):
    name = room("whip")
    pc, sdp = await offer_sdp(send=True)
    peers.append(pc)
    status, headers, answer = await post_offer(
        http, relay_server.url + f"/whip/{name}?nickname=obs", sdp
    )
    assert status == 201, answer
    assert headers["Content-Type"] == SDP
    location = headers["Location"]
    assert location.startswith(f"/whip/{name}/")
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert [p["nickname"] for p in people(relay_server, name)] == ["obs"]
    assert people(relay_server, name)[0]["dialect"] == "http"

    ufrag = next(line for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))
    mid = next(line for line in sdp.splitlines() if line.startswith("a=mid:"))
    host = next(line for line in sdp.splitlines() if line.startswith("a=candidate:"))
    cases = [  # (content type, body, extra headers, expected status)
        ("text/plain", "a=end-of-candidates\r\n", {}, 415),
        (TRICKLE, f"{ufrag}\r\n{mid}\r\n{host}\r\n", {"If-Match": '"stale"'}, 412),
        (TRICKLE, "a=ice-ufrag:restart1\r\na=ice-pwd:" + "p" * 24 + "\r\n", {}, 422),
        (TRICKLE, f"{ufrag}\r\n{mid}\r\na=candidate:garbage\r\n", {}, 400),
        (TRICKLE, f"{ufrag}\r\n{mid}\r\n{host}\r\na=end-of-candidates\r\n", {}, 204),
        (TRICKLE, f"{ufrag}\r\n{mid}\r\n{host}\r\n", {"If-Match": headers["ETag"]}, 204),
    ]
    for content_type, body, extra, expected in cases:
        request_headers = {"Content-Type": content_type, **extra}
        async with http.patch(
            relay_server.url + location, data=body, headers=request_headers
        ) as reply:
            assert reply.status == expected, (body, await reply.text())

    async with http.delete(relay_server.url + location) as reply:
        assert reply.status == 200
    assert people(relay_server, name) == []
    async with http.delete(relay_server.url + location) as reply:
        assert reply.status == 404


@pytest.fixture
def whip_token_server(server_pool) -> ServerProcess:
    return server_pool.get(
        "--media", "relay", "--auth", "token", "--api-key", KEY, env={"API_SECRET": SECRET}
    )


@pytest.mark.media
async def test_bearer_tokens_on_a_token_server(whip_token_server, http, peers, room):
    name = room("private")
    url = whip_token_server.url + f"/whip/{name}"
    pc, sdp = await offer_sdp(send=True)
    peers.append(pc)
    status, headers, _ = await post_offer(http, url, sdp)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert (await post_offer(http, url, sdp, "not-a-jwt"))[0] == 401
    assert (await post_offer(http, url, sdp, token("eve", room="elsewhere")))[0] == 403
    viewer = token("watcher", room=name, can_subscribe=True, can_publish=False)
    assert (await post_offer(http, url, sdp, viewer))[0] == 403
    publisher = token("studio", room=name)
    assert people(whip_token_server, name, publisher) == []
    status, headers, answer = await post_offer(http, url + "?nickname=ignored", sdp, publisher)
    assert status == 201, answer
    assert [p["nickname"] for p in people(whip_token_server, name, publisher)] == ["studio"]
    location = whip_token_server.url + headers["Location"]
    async with http.delete(location) as reply:
        assert reply.status == 401
    async with http.delete(location, headers={"Authorization": f"Bearer {publisher}"}) as reply:
        assert reply.status == 200


@pytest.mark.media
async def test_whip_publisher_is_seen_and_whep_viewer_follows_the_speaker(
    relay_server, http, peers, room, closing
):
    name = room("broadcast")
    # A WHIP publisher (participant 3), received and identified by a native client.
    publisher = RTCPeerConnection()
    peers.append(publisher)
    whip_tone = ToneTrack(TONES[3], amplitude=0.0)
    publisher.addTransceiver(whip_tone, direction="sendonly")
    publisher.addTransceiver(ColourTrack(COLOURS[3]), direction="sendonly")
    await publisher.setLocalDescription(await publisher.createOffer())
    status, headers, answer = await post_offer(
        http, relay_server.url + f"/whip/{name}?nickname=studio", publisher.localDescription.sdp
    )
    assert status == 201, answer
    await publisher.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    native_tone = ToneTrack(TONES[0])
    native = RoomClient(relay_server.url, nickname="host")
    await native.connect()
    closing.append(native.close)
    await native.join(name, audio=native_tone, video=ColourTrack(COLOURS[0]))
    await native.wait_until(lambda: any(p.nickname == "studio" for p in native.peers.values()))
    studio = next(p.peer_id for p in native.peers.values() if p.nickname == "studio")
    await native.wait_for_media([studio], kinds=("video",))
    assert await identify_video(native.subscribe(studio, "video")) == COLOURS[3]

    # A WHEP viewer: one audio and one video slot, following whoever speaks.
    viewer = CallPeer()
    closing.append(viewer.close)
    viewer.pc.addTransceiver("audio", direction="recvonly")
    viewer.pc.addTransceiver("video", direction="recvonly")
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    status, headers, answer = await post_offer(
        http, relay_server.url + f"/whep/{name}", viewer.pc.localDescription.sdp
    )
    assert status == 201, answer
    assert headers["Location"].startswith(f"/whep/{name}/")
    await viewer.accept({"sdp": answer})
    await viewer.wait_connected()

    async def shows(index: int) -> None:
        while True:
            colour = await identify_video(viewer.received("video"))
            tone = nearest_tone(await identify_audio(viewer.received("audio")))
            if colour == COLOURS[index] and tone == TONES[index]:
                return

    await asyncio.wait_for(shows(0), 20)  # the native client speaks
    native_tone.amplitude, whip_tone.amplitude = 0.0, 0.3
    await asyncio.wait_for(shows(3), 20)  # the WHIP publisher speaks: no renegotiation

    async with http.delete(relay_server.url + headers["Location"]) as reply:
        assert reply.status == 200


# Debian 12's simple-whip-client links libsoup2, while GStreamer's webrtc plugin reaches
# libsoup3 through libnice's UPnP helper (libgupnp-igd): libsoup aborts when both are
# loaded. UPnP port mapping has no use on loopback, so the client gets a do-nothing
# stand-in for libgupnp-igd (the four functions libnice calls) and never loads libsoup3.
IGD_STAND_IN = r"""
typedef unsigned long GType;
GType gupnp_simple_igd_get_type(void) { return (GType) (20 << 2); }  /* G_TYPE_OBJECT */
void *gupnp_simple_igd_thread_new(void) { return 0; }
void gupnp_simple_igd_add_port(void *igd, const char *protocol, unsigned external_port,
    const char *local_ip, unsigned local_port, unsigned lease, const char *description) {}
void gupnp_simple_igd_remove_port_local(void *igd, const char *protocol,
    const char *local_ip, unsigned short local_port) {}
"""
GST_VIDEO = {
    "vp8": "videotestsrc is-live=true pattern=red ! video/x-raw,width=320,height=240,"
    "framerate=15/1 ! videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2"
    " ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "videotestsrc is-live=true pattern=red ! video/x-raw,width=320,height=240,"
    "framerate=15/1 ! videoconvert ! queue ! openh264enc ! video/x-h264,"
    "profile=constrained-baseline ! rtph264pay config-interval=-1 pt=102 ssrc=2 ! queue"
    " ! application/x-rtp,media=video,encoding-name=H264,payload=102,"
    # Stated here: webrtcbin's offer otherwise races the payloader for the fmtp line.
    "packetization-mode=(string)1,profile-level-id=(string)42e01f",
}
GST_AUDIO = (
    "audiotestsrc is-live=true wave=sine freq=620 ! audioconvert ! audioresample ! queue"
    " ! opusenc ! rtpopuspay pt=100 ssrc=1 ! queue"
    " ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
)


def igd_stand_in(folder) -> str:
    source = folder / "igd.c"
    source.write_text(IGD_STAND_IN)
    library = folder / "libgupnp-igd-1.0.so.4"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return str(folder)


async def viewer_of(server: ServerProcess, room: str, codec: str, closing) -> RoomClient:
    viewer = RoomClient(server.url, nickname=f"{codec}-viewer", video_codecs=[f"video/{codec}"])
    await viewer.connect()
    closing.append(viewer.close)
    await viewer.join(room)
    return viewer


async def sees_the_pattern(viewer: RoomClient, nickname: str) -> str:
    """Wait for ``nickname``'s media; check it is red with a 620 Hz tone; return its peer id."""
    await viewer.wait_until(lambda: any(p.nickname == nickname for p in viewer.peers.values()))
    publisher = next(p.peer_id for p in viewer.peers.values() if p.nickname == nickname)
    await viewer.wait_for_media([publisher])
    video = viewer.subscribe(publisher, "video")
    frames = [await video.recv() for _ in range(8)]
    assert colour_matches(mean_colour(frames[-1]), (255, 0, 0)), mean_colour(frames[-1])
    assert nearest_tone(await identify_audio(viewer.subscribe(publisher, "audio"))) == 620.0
    return publisher


@pytest.mark.media
@pytest.mark.parametrize("codec", sorted(GST_VIDEO))
async def test_simple_whip_client_publishes_a_test_pattern(
    relay_server, room, closing, tmp_path, codec
):
    """GStreamer publishes; a viewer of the same codec gets it forwarded, the other transcoded."""
    name = room("gst")
    client = await asyncio.create_subprocess_exec(
        "whip-client",
        "-u",
        f"{relay_server.url}/whip/{name}?nickname=gstreamer",
        "-V",
        GST_VIDEO[codec],
        "-A",
        GST_AUDIO,
        "-o",
        env={**os.environ, "LD_LIBRARY_PATH": igd_stand_in(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )

    async def stop_client() -> None:
        if client.returncode is None:
            client.terminate()
            await client.wait()

    closing.append(stop_client)
    viewers = [await viewer_of(relay_server, name, c, closing) for c in ("VP8", "H264")]
    try:
        publishers = [await sees_the_pattern(viewer, "gstreamer") for viewer in viewers]
    except (AssertionError, TimeoutError) as failure:
        await stop_client()
        assert client.stdout is not None
        said = (await client.stdout.read()).decode(errors="replace")[-3000:]
        raise AssertionError(f"{failure!r}; whip-client said:\n{said}") from failure

    # Stopping the client ends its session (DELETE), and the publisher leaves the room.
    client.send_signal(signal.SIGINT)
    await asyncio.wait_for(client.wait(), 10)
    await viewers[0].wait_until(lambda: publishers[0] not in viewers[0].peers)

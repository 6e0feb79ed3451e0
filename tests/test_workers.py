"""Relay mode on media worker processes (--workers): rooms spread, media flows, crashes heal.

Real server processes, real aiortc clients; every media check identifies the
sender by colour and tone.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from server.client import RoomClient
from tests.support.clients import PythonClient
from tests.support.media import (
    COLOURS,
    TONES,
    ColourTrack,
    PcmTrack,
    identify_video,
    nearest_tone,
)
from tests.support.metrics import scrape, value
from tests.support.server import ServerProcess
from tests.test_audio_relay import wav_facts
from tests.test_quality import uplink_reports
from tests.test_relay_media import assert_receives_exactly
from tests.test_ws_audio import AudioSocket, spectrum_peaks

pytestmark = pytest.mark.media

WORKER_ARGS = ("--media", "relay", "--media-timeout", "5", "--workers", "2")


@pytest.fixture
def workers_server(server_pool):
    return server_pool.get(*WORKER_ARGS)


@pytest.fixture
def own_workers_server():
    """A server of this test's own, for tests that kill its workers."""
    server = ServerProcess(args=WORKER_ARGS).start()
    yield server
    server.stop()


def workers(server: ServerProcess) -> list[dict]:
    return server.get_json("/stats")["media"]["workers"]


def published_video(server: ServerProcess) -> float:
    """The /metrics gauge of video tracks published (the workers report publications)."""
    return value(scrape(server.url + "/metrics"), "roomrelay_tracks_published", kind="video")


def worker_of(server: ServerProcess, room_name: str) -> dict:
    return next(w for w in workers(server) if room_name in w["rooms"])


async def test_rooms_go_to_the_least_loaded_worker_and_media_flows_in_each(
    workers_server, room, room_clients
):
    first, second = room("w1"), room("w2")
    a = [await room_clients(workers_server, first, i) for i in (0, 1)]
    b = [await room_clients(workers_server, second, i) for i in (2, 3)]

    await asyncio.gather(
        assert_receives_exactly(a[0], {a[1].peer_id: 1}),
        assert_receives_exactly(a[1], {a[0].peer_id: 0}),
        assert_receives_exactly(b[0], {b[1].peer_id: 3}),
        assert_receives_exactly(b[1], {b[0].peer_id: 2}),
    )
    slots = {worker_of(workers_server, first)["slot"], worker_of(workers_server, second)["slot"]}
    assert len(slots) == 2, workers(workers_server)
    pids = {w["pid"] for w in workers(workers_server)}
    assert os.getpid() not in pids and len(pids) == 2

    def reported() -> bool:
        rooms = {r["name"]: r for r in workers_server.get_json("/rooms")["rooms"]}
        media = workers_server.get_json("/stats")["media"]
        return (
            all(rooms[name]["media"].get("publications") == 4 for name in (first, second))
            and media["publications"] >= 8
        )

    await asyncio.wait_for(_until(reported, 0.3), 10)
    rooms = {r["name"]: r for r in workers_server.get_json("/rooms")["rooms"]}
    assert {rooms[first]["media"]["worker"], rooms[second]["media"]["worker"]} == slots
    # The workers' uplink figures reach the front's clients, room by room.
    assert (await uplink_reports(b[0], {b[0].peer_id, b[1].peer_id})).keys() == {
        b[0].peer_id,
        b[1].peer_id,
    }


async def test_a_bad_offer_is_refused_by_the_front_and_changes_nothing(
    workers_server, room, room_clients
):
    client = await room_clients(workers_server, room(), 0)
    reply = await client.sio.call("offer", {"type": "offer", "sdp": "v=0 nonsense"}, timeout=5)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_sdp"
    assert client.connection_state == "connected"


async def test_killed_worker_rooms_move_and_clients_get_media_and_chat_back(
    own_workers_server, room, room_clients
):
    server = own_workers_server
    name = room("crash")
    clients = [await room_clients(server, name, i) for i in range(3)]
    await asyncio.gather(
        *(
            assert_receives_exactly(c, {o.peer_id: j for j, o in enumerate(clients) if o is not c})
            for c in clients
        )
    )
    await asyncio.wait_for(_until(lambda: published_video(server) == 3, 0.3), 10)
    closed: list[dict] = []
    clients[0].on("media_closed", closed.append)
    chat: list[dict] = []
    clients[2].on("chat_message", chat.append)
    owner = worker_of(server, name)

    os.kill(owner["pid"], signal.SIGKILL)

    async def reconnected() -> None:
        while not closed:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(reconnected(), 10)
    assert closed[0]["reason"] == "moved to another media worker"
    await asyncio.gather(
        *(
            assert_receives_exactly(c, {o.peer_id: j for j, o in enumerate(clients) if o is not c})
            for c in clients
        )
    )
    await clients[1].chat("still here")
    await asyncio.wait_for(_until(lambda: bool(chat)), 5)
    await asyncio.sleep(0.3)
    assert [(m["peer_id"], m["text"]) for m in chat] == [(clients[1].peer_id, "still here")]
    await asyncio.wait_for(_until(lambda: published_video(server) == 3, 0.3), 10)
    assert set(clients[0].peers) == {clients[1].peer_id, clients[2].peer_id}

    async def restarted() -> list[dict]:
        while True:
            stats = server.get_json("/stats")["media"]
            if stats["worker_restarts"] == 1 and all(w["alive"] for w in stats["workers"]):
                return stats["workers"]
            await asyncio.sleep(0.2)

    now = await asyncio.wait_for(restarted(), 30)
    assert owner["pid"] not in {w["pid"] for w in now}
    assert sum(1 for w in now if name in w["rooms"]) == 1
    # A new room still finds a worker, and media flows there.
    fresh = room("after")
    late = [await room_clients(server, fresh, i) for i in (3, 4)]
    await assert_receives_exactly(late[0], {late[1].peer_id: 4})


async def test_live_audio_comes_from_the_worker_that_owns_the_room(
    own_workers_server, room, room_clients
):
    """``WS /ws/audio`` with workers: the room's worker streams its PCM up to the front:
    one participant's tone, and the room's mix without the room on the other worker;
    when that worker is killed, the same streams carry on from the room's new worker."""
    server = own_workers_server
    name, other = room("live"), room("other")
    first = (await room_clients(server, name, 1)).peer_id
    await room_clients(server, name, 4)
    await room_clients(server, other, 2)
    assert worker_of(server, name)["slot"] != worker_of(server, other)["slot"]
    both = sorted([TONES[1], TONES[4]])

    async def mix_is_back(mix: AudioSocket) -> None:
        while sorted(nearest_tone(f) for f in spectrum_peaks(await mix.pcm(1.0), 2)) != both:
            pass

    async with (
        aiohttp.ClientSession() as http,
        AudioSocket(http, server.url) as one,
        AudioSocket(http, server.url) as mix,
    ):
        started = await one.control({"type": "start_streaming", "room": name, "peer_id": first})
        assert (started["type"], started["message"], started["peer_id"]) == (
            "log",
            "streaming",
            first,
        )
        await one.pcm(0.3)  # start-up
        assert nearest_tone(spectrum_peaks(await one.pcm(1.0), 1)[0]) == TONES[1]
        assert (await mix.control({"type": "start_streaming", "room": name}))["room"] == name
        await mix.pcm(0.3)
        assert sorted(nearest_tone(f) for f in spectrum_peaks(await mix.pcm(1.0), 2)) == both

        os.kill(worker_of(server, name)["pid"], signal.SIGKILL)
        await asyncio.wait_for(mix_is_back(mix), 30)  # the clients reconnected their media
        assert nearest_tone(spectrum_peaks(await one.pcm(1.0), 1)[0]) == TONES[1]
        await one.control({"type": "stop_streaming"})

    def taps() -> int:
        return server.get_json("/stats")["media"]["audio"]["taps"]

    # Nobody listens any more and nothing else wants the room's audio: no more decoding.
    await asyncio.wait_for(_until(lambda: taps() == 0, 0.2), 10)


async def _until(condition, interval: float = 0.05) -> None:
    while not condition():
        await asyncio.sleep(interval)


async def test_recording_and_captions_run_on_the_worker_that_owns_the_room(tmp_path, room, speak):
    server = ServerProcess(
        args=(*WORKER_ARGS, "--record-dir", str(tmp_path), "--stt", "--stt-rooms", "talk-*")
    ).start(timeout=60)
    name = room("talk")
    listener = await PythonClient().connect(server.url)
    talker = RoomClient(server.url, nickname="ada")
    try:
        await listener.call("join_room", {"room": name, "nickname": "listener"})
        speech = speak("one two three four five", rate=48000) + bytes(2 * 48000 * 2)
        await talker.connect()
        await talker.join(name, audio=PcmTrack(speech, 48000))
        caption = await listener.wait_for("transcript", where=lambda a: a[0]["final"], timeout=40)
        assert caption[0]["nickname"] == "ada" and caption[0]["peer_id"] == talker.peer_id
        assert caption[0]["text"].strip()  # the words themselves: test_audio_relay.py
        assert (await listener.wait_for("recording"))[0] == {"active": True}
        audio = server.get_json("/stats")["media"]["audio"]
        assert audio["consumers"] == ["recorder", "captions", "live"] and audio["taps"] == 1
        await talker.close()
        await listener.wait_for("recording", where=lambda a: not a[0]["active"], timeout=20)
        files = list((tmp_path / name).glob("*-ada-*.wav"))
        assert len(files) == 1
        seconds, level, rate, _ = wav_facts(files[0])
        assert rate == 16000 and seconds > 1 and level > 300  # speech, not silence
        entries = server.get_json(f"/rooms/{name}/transcript")["entries"]
        assert [e["text"] for e in entries] == [caption[0]["text"]]
    finally:
        await talker.close()
        await listener.close()
        server.stop()


async def test_a_host_mute_survives_the_room_moving_to_another_worker(room):
    server = ServerProcess(args=(*WORKER_ARGS, "--first-is-host")).start(timeout=60)
    name = room("mute")
    clients = [RoomClient(server.url, nickname=n) for n in ("host", "talker", "viewer")]
    host, talker, viewer = clients
    try:
        for index, participant in enumerate(clients):
            await participant.connect()
            await participant.join(name, video=ColourTrack(COLOURS[index]))
        await viewer.wait_for_media([host.peer_id, talker.peer_id], kinds=["video"])
        reply = await host.sio.call(
            "mute_participant", {"peer_id": talker.peer_id, "kind": "video"}, timeout=10
        )
        assert reply == {"ok": True}
        await viewer.wait_until(lambda: "video" not in viewer.peers[talker.peer_id].tracks)

        reset: list[dict] = []
        viewer.on("media_closed", reset.append)  # runs once the old connection is gone
        os.kill(worker_of(server, name)["pid"], signal.SIGKILL)

        await asyncio.wait_for(_until(lambda: bool(reset)), 10)
        await viewer.wait_for_media([host.peer_id], kinds=["video"])
        assert await identify_video(viewer.subscribe(host.peer_id, "video")) == COLOURS[0]
        await talker.wait_for_media([host.peer_id], kinds=["video"])
        await asyncio.sleep(1.0)
        assert "video" not in viewer.peers[talker.peer_id].tracks
        assert worker_of(server, name)["participants"] == 3
    finally:
        for participant in clients:
            await participant.close()
        server.stop()


async def test_workers_exit_with_their_front_even_when_it_is_killed():
    server = ServerProcess(args=WORKER_ARGS).start(timeout=60)
    pids = [w["pid"] for w in workers(server)]
    server.kill()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A worker that exited but was not yet reaped by init is a zombie: gone too.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    await asyncio.wait_for(_until(lambda: all(gone(pid) for pid in pids), 0.1), 15)

"""Server-side audio end to end: aiortc speakers, recordings on disk, live captions in the room."""

from __future__ import annotations

import asyncio
import math
import re
import time
import urllib.request
import wave
from array import array
from pathlib import Path

import pytest

from server.client import RoomClient
from tests.support.clients import PythonClient
from tests.support.media import COLOURS, ColourTrack, PcmTrack, ToneTrack, collect
from tests.support.server import ServerProcess

pytestmark = pytest.mark.media

NUMBERS = "one two three four five"
NUMBER_WORDS = set(NUMBERS.split())
SPOKEN_AT = 48000


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def is_final(args: list) -> bool:
    return args[0]["final"]


def wav_facts(path: Path) -> tuple[float, float, int, int]:
    """(seconds, RMS, sample rate, channels) of a WAV file."""
    with wave.open(str(path)) as wav:
        samples = array("h", wav.readframes(wav.getnframes()))
        seconds = wav.getnframes() / wav.getframerate()
        level = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
        return seconds, level, wav.getframerate(), wav.getnchannels()


@pytest.fixture(scope="module")
def audio_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recordings")
    server = ServerProcess(
        args=("--media", "relay", "--record-dir", str(folder), "--stt", "--stt-partials")
    )
    server.record_dir = folder
    server.start(timeout=60)
    yield server
    server.stop()


async def speaker(server, room_name, nickname, pcm):
    client = RoomClient(server.url, nickname=nickname)
    await client.connect()
    track = PcmTrack(pcm, SPOKEN_AT)
    await client.join(room_name, audio=track)
    return client, track


async def test_speech_is_recorded_and_captioned_for_the_room_only(audio_server, room, speak):
    name, elsewhere = room("talk"), room("quiet")
    listener = await PythonClient().connect(audio_server.url)
    outsider = await PythonClient().connect(audio_server.url)
    await listener.call("join_room", {"room": name, "nickname": "listener"})
    await outsider.call("join_room", {"room": elsewhere, "nickname": "outsider"})
    speech = speak(NUMBERS, rate=SPOKEN_AT) + bytes(2 * SPOKEN_AT * 2)  # then 2 s of silence
    talker, track = await speaker(audio_server, name, "ada", speech)
    try:
        caption = await listener.wait_for("transcript", where=is_final, timeout=30)
        assert caption[0]["nickname"] == "ada" and caption[0]["peer_id"] == talker.peer_id
        assert caption[0]["final"] is True and caption[0]["start"] < caption[0]["end"]
        heard = words(caption[0]["text"]) & NUMBER_WORDS
        assert len(heard) >= 2, caption[0]["text"]
        assert (await listener.wait_for("recording"))[0] == {"active": True}
        await asyncio.sleep(3.5 - (time.time() - track.started_at))
        sent = time.time() - track.started_at
    finally:
        await talker.close()

    await listener.wait_for("recording", where=lambda a: a[0] == {"active": False}, timeout=20)
    files = list((audio_server.record_dir / name).glob("*-ada-*.wav"))
    assert len(files) == 1, files
    seconds, level, rate, channels = wav_facts(files[0])
    assert (rate, channels) == (16000, 1)
    assert abs(seconds - sent) <= 0.5, (seconds, sent)
    assert level > 300  # speech, not silence
    partials = [args[0] for args in listener.received("transcript") if not is_final(args)]
    assert partials and all(p["peer_id"] == talker.peer_id for p in partials)
    entries = audio_server.get_json(f"/rooms/{name}/transcript")["entries"]
    finals = [args[0]["text"] for args in listener.received("transcript") if is_final(args)]
    assert [entry["text"] for entry in entries] == finals  # partials are not kept
    with urllib.request.urlopen(f"{audio_server.url}/rooms/{name}/transcript?format=text") as r:
        assert "ada: " in r.read().decode()
        assert "attachment" in r.headers["Content-Disposition"]
    assert not {"transcript", "recording"} & set(outsider.names())
    assert not list((audio_server.record_dir).glob(f"{elsewhere}/*.wav"))
    await listener.close()
    await outsider.close()


async def test_two_speakers_get_captions_under_their_own_names(audio_server, room, speak):
    name = room("duo")
    listener = await PythonClient().connect(audio_server.url)
    await listener.call("join_room", {"room": name, "nickname": "listener"})
    first = speak("three four five", rate=SPOKEN_AT) + bytes(4 * SPOKEN_AT)
    second = bytes(2 * SPOKEN_AT) + speak("one two three", rate=SPOKEN_AT) + bytes(4 * SPOKEN_AT)
    clients = [
        await speaker(audio_server, name, "grace", first),
        await speaker(audio_server, name, "linus", second),
    ]
    try:
        await listener.wait_for("transcript", 2, where=is_final, timeout=40)
        finals = [args[0] for args in listener.received("transcript") if is_final(args)]
        by_name = {entry["nickname"]: entry for entry in finals}
        assert set(by_name) == {"grace", "linus"}
        peers = {client.nickname: client.peer_id for client, _ in clients}
        assert all(entry["peer_id"] == peers[nick] for nick, entry in by_name.items())
    finally:
        for client, _ in clients:
            await client.close()
        await listener.close()


async def test_a_slow_consumer_loses_audio_not_frame_rate(server_pool, room):
    server = server_pool.get(
        "--media", "relay", "--audio-consumers", "tests.support.slow_consumer:SlowConsumer",
        "--tap-buffer-seconds", "0.5",
    )  # fmt: skip
    name = room()
    publisher = RoomClient(server.url, nickname="pub")
    viewer = RoomClient(server.url, nickname="viewer")
    try:
        await publisher.connect()
        await publisher.join(name, audio=ToneTrack(440), video=ColourTrack(COLOURS[0]))
        await viewer.connect()
        await viewer.join(name)
        await viewer.wait_for_media([publisher.peer_id])
        video = viewer.subscribe(publisher.peer_id, "video")
        audio = viewer.subscribe(publisher.peer_id, "audio")
        await collect(video, 5)
        started = time.monotonic()
        frames = await collect(video, 60, timeout=10)
        elapsed = time.monotonic() - started
        assert len(frames) / elapsed > 20  # ColourTrack sends 30 fps
        assert len(await collect(audio, 50, timeout=3)) == 50  # a second of audio, on time
        stats = server.get_json("/stats")["media"]["audio"]
        assert stats["consumers"] == ["slow", "live"]  # live: /ws/audio listeners
        assert stats["dropped_chunks"]["slow"] > 50
    finally:
        await viewer.close()
        await publisher.close()


async def test_killing_the_server_mid_recording_leaves_a_readable_wav(tmp_path, room, speak):
    server = ServerProcess(args=("--media", "relay", "--record-dir", str(tmp_path))).start()
    name = room("crash")
    speech = speak(NUMBERS, rate=SPOKEN_AT) * 3
    talker, _ = await speaker(server, name, "ada", speech)
    try:
        await talker.wait_connected()
        await asyncio.sleep(3.0)
        server.kill()
    finally:
        await talker.close()
    files = list((tmp_path / name).glob("*.wav"))
    assert len(files) == 1
    seconds, level, _, _ = wav_facts(files[0])
    assert seconds >= 1.5 and level > 300


async def test_only_the_chosen_rooms_are_recorded_or_even_decoded(tmp_path, room, speak):
    recorded, plain = room("rec"), room("plain")
    server = ServerProcess(
        args=("--media", "relay", "--record-dir", str(tmp_path), "--record-rooms", "rec-*")
    ).start()
    listeners: dict[str, PythonClient] = {}
    talkers: list[RoomClient] = []
    try:
        for name in (recorded, plain):
            listeners[name] = await PythonClient().connect(server.url)
            ack = await listeners[name].call("join_room", {"room": name, "nickname": "listener"})
            assert ack[0]["ok"] and ack[0]["captions"] is False
        speech = speak(NUMBERS, rate=SPOKEN_AT)
        for name in (recorded, plain):
            talker, _ = await speaker(server, name, "ada", speech)
            talkers.append(talker)
            await talker.wait_connected()
        await listeners[recorded].wait_for("recording", where=lambda a: a[0]["active"], timeout=20)
        assert server.get_json("/stats")["media"]["audio"]["taps"] == 1
        await asyncio.sleep(1.5)
    finally:
        for talker in talkers:
            await talker.close()
    try:
        await listeners[recorded].wait_for(
            "recording", where=lambda a: not a[0]["active"], timeout=20
        )
        assert len(list((tmp_path / recorded).glob("*-ada-*.wav"))) == 1
        assert not (tmp_path / plain).exists()
        assert "recording" not in listeners[plain].names()
    finally:
        for listener in listeners.values():
            await listener.close()
        server.stop()

"""The audio consumers with real audio and real engines: espeak-ng speech, PocketSphinx,
webrtcvad, WAV files on disk. Only the room output (the Socket.IO side) is a stub."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import pytest

from server.audio import (
    BYTES_PER_SECOND,
    AudioChunk,
    AudioConsumer,
    BaseConsumer,
    RoomPatterns,
    SpeechRecognizer,
    TranscriptStore,
    VoiceSegmenter,
    WavRecorder,
    rms,
    safe_name,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHUNK = 640  # 20 ms

NUMBERS = "one, two, three, four, five"
GREETING = "hello, good morning, how are you today"


class RecordingOutput:
    """The room output, recorded: what a consumer would send to the room's clients."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    async def emit(self, room: str, event: str, data: dict) -> None:
        self.events.append((room, event, data))

    def of(self, event: str, peer_id: str | None = None) -> list[dict]:
        return [
            data
            for _, name, data in self.events
            if name == event and (peer_id is None or data.get("peer_id") == peer_id)
        ]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def chunks(room: str, peer: str, nickname: str, pcm: bytes, start: float) -> list[AudioChunk]:
    return [
        AudioChunk(room, peer, nickname, pcm[i : i + CHUNK], start + i / BYTES_PER_SECOND)
        for i in range(0, len(pcm), CHUNK)
    ]


# --- speech recognition -----------------------------------------------------------------------


@pytest.mark.speech
async def test_two_speakers_get_their_own_captions_without_stalling_the_loop(speak):
    numbers = silence(0.5) + speak(NUMBERS) + silence(1.0)
    greeting = silence(0.8) + speak(GREETING) + silence(1.0)
    output, store = RecordingOutput(), TranscriptStore()
    recognizer = SpeechRecognizer(store=store, workers=1)
    await recognizer.start(output)
    await recognizer.wait_ready()

    # A ticker measures event-loop stalls: decoding must happen outside this process's GIL.
    stalls: list[float] = []

    async def tick() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stalls.append(time.perf_counter() - before)

    ticker = asyncio.create_task(tick())
    t0 = time.time()
    ada = chunks("lab", "peer-ada", "Ada", numbers, t0)
    grace = chunks("lab", "peer-grace", "Grace", greeting, t0)
    slowest_call = 0.0
    for index in range(max(len(ada), len(grace))):  # interleaved, as the tap delivers them
        for stream in (ada, grace):
            if index < len(stream):
                started = time.perf_counter()
                await recognizer.on_audio(stream[index])
                slowest_call = max(slowest_call, time.perf_counter() - started)
        await asyncio.sleep(0)
    await recognizer.participant_left("lab", "peer-ada")
    await recognizer.participant_left("lab", "peer-grace")
    await asyncio.sleep(0.05)
    ticker.cancel()
    await recognizer.close()

    assert slowest_call < 0.05
    assert max(stalls) < 0.3, f"event loop stalled for {max(stalls):.2f} s"

    for peer, nickname, spoken, audio, lead in (
        ("peer-ada", "Ada", NUMBERS, numbers, 0.5),
        ("peer-grace", "Grace", GREETING, greeting, 0.8),
    ):
        captions = output.of("transcript", peer)
        assert captions, f"no transcript for {peer}"
        heard = words(" ".join(caption["text"] for caption in captions))
        expected = words(spoken) - {"are", "you"}  # the language model says those for anything
        assert len(heard & expected) >= 2, (spoken, heard)
        for caption in captions:
            assert caption["nickname"] == nickname and caption["final"] is True
            assert caption["start"] < caption["end"]
            # Speech starts after the leading silence (less the VAD's pre-roll) and ends
            # before the trailing silence.
            assert t0 + lead - 0.4 <= caption["start"] <= t0 + lead + 0.5
            assert caption["end"] <= t0 + len(audio) / BYTES_PER_SECOND - 0.8
    ada_words = words(" ".join(c["text"] for c in output.of("transcript", "peer-ada")))
    assert "morning" not in ada_words

    assert {entry["peer_id"] for entry in store.entries("lab")} == {"peer-ada", "peer-grace"}
    text = store.as_text("lab")
    assert re.search(r"^\[\d\d:\d\d:\d\d\] Ada: \w", text, re.MULTILINE), text
    assert re.search(r"^\[\d\d:\d\d:\d\d\] Grace: \w", text, re.MULTILINE), text
    assert recognizer.stats.dropped == 0 and recognizer.stats.failed == 0
    assert recognizer.stats.engine_cpu_seconds > 0


class SlowRecognizer:
    """A stand-in for an overloaded engine (a recognizer that takes 0.4 s per utterance)."""

    def transcribe(self, pcm: bytes) -> str:
        time.sleep(0.4)
        return "slow words"


async def test_a_slow_engine_costs_captions_not_the_callers_time(speak, caplog):
    phrase = speak("hello there") + silence(0.9)
    recognizer = SpeechRecognizer(SlowRecognizer, isolation="thread", workers=1, max_pending=1)
    output = RecordingOutput()
    await recognizer.start(output)
    await recognizer.wait_ready()
    t0 = time.time()
    slowest_call = 0.0
    feeding_started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="server.audio.stt"):
        for chunk in chunks("r", "p", "Ann", silence(0.3) + phrase * 6, t0):
            started = time.perf_counter()
            await recognizer.on_audio(chunk)
            slowest_call = max(slowest_call, time.perf_counter() - started)
            await asyncio.sleep(0)
        feeding = time.perf_counter() - feeding_started
        await recognizer.participant_left("r", "p")
    await recognizer.close()

    stats = recognizer.stats
    assert slowest_call < 0.02 and feeding < 1.0  # 6 utterances in well under their 2.4 s
    assert stats.utterances == 6
    assert stats.dropped >= 3 and stats.dropped_seconds > 1.0
    assert stats.transcripts + stats.dropped == stats.utterances
    assert len(output.of("transcript")) == stats.transcripts
    assert "speech recognition is behind" in caplog.text


def test_segmenter_cuts_speech_at_pauses(speak):
    phrase = speak("hello there")
    audio = silence(0.5) + phrase + silence(1.0) + phrase + silence(1.0)
    segmenter = VoiceSegmenter()
    found = []
    for chunk in chunks("r", "p", "n", audio, 1000.0):
        found += segmenter.feed(chunk.pcm, chunk.timestamp)
    assert segmenter.flush() is None
    assert len(found) == 2
    second_start = 1000.0 + 0.5 + len(phrase) / BYTES_PER_SECOND + 1.0
    assert found[0].start == pytest.approx(1000.5, abs=0.35)
    assert found[1].start == pytest.approx(second_start, abs=0.35)
    for utterance in found:
        assert utterance.start < utterance.end
        assert utterance.duration >= 0.5 and rms(utterance.pcm) > 300

    # Silence never starts an utterance; a long one is cut at max_length.
    assert VoiceSegmenter().feed(silence(3.0), 0.0) == []
    short = VoiceSegmenter(max_length=1.0)
    pieces = short.feed(phrase * 3, 0.0)
    last = short.flush()
    pieces += [last] if last else []
    assert len(pieces) >= 2 and all(piece.duration <= 1.0 + 0.3 for piece in pieces)


ORPHANED_WORKERS = """
import asyncio, multiprocessing
from server.audio import SpeechRecognizer

class Output:
    async def emit(self, room, event, data):
        pass

async def main() -> None:
    recognizer = SpeechRecognizer(workers=1)
    await recognizer.start(Output())
    await recognizer.wait_ready()
    print(" ".join(str(child.pid) for child in multiprocessing.active_children()), flush=True)
    await asyncio.sleep(60)  # killed here, never closed

if __name__ == "__main__":
    asyncio.run(main())
"""


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.speech
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_engine_workers_exit_when_the_server_is_killed(tmp_path):
    script = tmp_path / "server_stand_in.py"
    script.write_text(ORPHANED_WORKERS)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        workers = [int(pid) for pid in process.stdout.readline().split()]
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert workers
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(running(pid) for pid in workers)


# --- recording ------------------------------------------------------------------------------


def read_wav(path: Path):
    with wave.open(str(path)) as wav:
        return wav.getparams(), wav.readframes(wav.getnframes())


async def test_recorder_writes_one_named_wav_per_participant(tmp_path, speak):
    audio = (speak(NUMBERS) + speak(GREETING))[: 3 * BYTES_PER_SECOND]
    output = RecordingOutput()
    recorder = WavRecorder(tmp_path)
    await recorder.start(output)
    room = "Team / ../../Design"
    for chunk in chunks(room, "sid_Ab-9", "Ada Lovelace/..", audio, time.time()):
        await recorder.on_audio(chunk)
    assert recorder.is_recording(room)
    await recorder.participant_left(room, "sid_Ab-9")
    assert not recorder.is_recording(room)

    files = list(tmp_path.rglob("*.wav"))
    assert len(files) == 1
    path = files[0]
    assert path.parent == tmp_path / "Team_Design"
    assert re.fullmatch(r"\d{8}-\d{6}-Ada_Lovelace-sid_Ab-9\.wav", path.name), path.name
    params, frames = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16000)
    assert params.nframes / 16000 == pytest.approx(3.0, abs=0.1)
    assert frames == audio
    assert rms(frames) > 500
    assert [data for _, event, data in output.events if event == "recording"] == [
        {"active": True},
        {"active": False},
    ]


async def test_recorder_keeps_gaps_and_rolls_files_over(tmp_path, speak):
    voice = speak(GREETING)[:BYTES_PER_SECOND]
    recorder = WavRecorder(tmp_path, max_file_seconds=2.5)
    await recorder.start(RecordingOutput())
    t0 = time.time()
    # 1 s of speech, then nothing for 2 s (chunks dropped upstream), then 1 s more.
    for chunk in chunks("r", "p", "Bo", voice, t0) + chunks("r", "p", "Bo", voice, t0 + 3.0):
        await recorder.on_audio(chunk)
    await recorder.close()

    files = sorted((tmp_path / "r").glob("*.wav"))
    assert len(files) == 2  # 4 s of timeline in files of at most 2.5 s
    recorded = b"".join(read_wav(path)[1] for path in files)
    assert len(recorded) / BYTES_PER_SECOND == pytest.approx(4.0, abs=0.05)
    assert recorded[:BYTES_PER_SECOND] == voice
    assert rms(recorded[BYTES_PER_SECOND : 3 * BYTES_PER_SECOND]) == 0
    assert recorded[3 * BYTES_PER_SECOND :] == voice


CRASHING_RECORDER = """
import asyncio, sys, time
from pathlib import Path
from server.audio import AudioChunk, WavRecorder

async def main() -> None:
    recorder = WavRecorder(Path(sys.argv[1]))
    pcm = Path(sys.argv[2]).read_bytes()
    t0 = time.time()
    for i in range(0, len(pcm), 640):
        await recorder.on_audio(AudioChunk("crash", "p1", "Cy", pcm[i:i + 640], t0 + i / 32000))
    print("fed", flush=True)
    await asyncio.sleep(60)  # killed here, never finalized

asyncio.run(main())
"""


def test_recorder_file_survives_sigkill(tmp_path, speak):
    audio = (speak(NUMBERS) * 2)[: int(3.1 * BYTES_PER_SECOND)]
    source = tmp_path / "audio.raw"
    source.write_bytes(audio)
    record_dir = tmp_path / "rec"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CRASHING_RECORDER), str(record_dir), str(source)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "fed"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    (path,) = (record_dir / "crash").glob("*.wav")
    params, frames = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, 16000)
    assert params.nframes / 16000 >= 2.0
    assert frames == audio[: len(frames)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Design Review", "Design_Review"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("..", "_"),
        (".hidden", "hidden"),
        ("x..y", "x.y"),
        ("Grüße, Café", "Grüße_Café"),
        ("\x00\n", "_"),
    ],
)
def test_safe_name(text, expected):
    name = safe_name(text)
    assert name == expected
    assert "/" not in name and "\\" not in name and ".." not in name


# --- transcripts and custom consumers ---------------------------------------------------------


def test_transcript_store_orders_bounds_and_formats():
    store = TranscriptStore(max_entries=3, max_rooms=2)
    base = time.mktime((2026, 11, 21, 14, 25, 1, 0, 0, -1))
    for i, text in enumerate(["one", "two", "three", "four"]):
        store.add("a", {"nickname": "Ada", "text": text, "start": base + 10 - i, "end": base + 11})
    store.add("a", {"nickname": "Ada", "text": "  ", "start": base})  # nothing heard
    assert [e["text"] for e in store.entries("a")] == ["four", "three", "two"]
    store.add("a", {"nickname": "Grace\nHopper", "text": "hello\nthere", "start": base})
    assert store.as_text("a").splitlines()[0] == "[14:25:01] Grace Hopper: hello there"
    store.add("b", {"nickname": "B", "text": "x", "start": base})
    store.add("c", {"nickname": "C", "text": "y", "start": base})
    assert store.rooms() == ["b", "c"] and store.entries("a") == []
    assert store.as_text("nowhere") == ""


class LoudnessAlarm(BaseConsumer):
    """The README's example of a custom consumer."""

    name = "loudness"

    async def on_audio(self, chunk: AudioChunk) -> None:
        level = rms(chunk.pcm)
        if level > 8000:
            await self.emit(chunk.room, "too_loud", {"peer_id": chunk.peer_id, "rms": level})


class FailingOutput:
    async def emit(self, room: str, event: str, data: dict) -> None:
        raise ConnectionError("socket gone")


async def test_custom_consumer_in_a_few_lines(caplog):
    loud = b"\xff\x7f\x01\x80" * 160  # full-scale square wave
    consumer = LoudnessAlarm()
    assert isinstance(consumer, AudioConsumer)
    output = RecordingOutput()
    await consumer.start(output)
    await consumer.on_audio(AudioChunk("r", "p", "n", silence(0.02), 0.0))
    await consumer.on_audio(AudioChunk("r", "p", "n", loud, 0.02))
    await consumer.participant_left("r", "p")
    await consumer.close()
    assert output.events == [("r", "too_loud", {"peer_id": "p", "rms": 32767.0})]
    assert math.isclose(rms(loud), 32767.0)

    # A failing room output is logged, never raised into the tap.
    await consumer.start(FailingOutput())
    with caplog.at_level(logging.ERROR):
        await consumer.on_audio(AudioChunk("r", "p", "n", loud, 0.04))
    assert "socket gone" in caplog.text


def test_room_patterns_choose_rooms_by_name_or_pattern_case_sensitively():
    rooms = RoomPatterns(["standup", "team-*"])
    assert "standup" in rooms and "team-a" in rooms
    assert "Standup" not in rooms and "teams" not in rooms and "standup-2" not in rooms
    assert "any room at all" in RoomPatterns()
    with pytest.raises(ValueError):
        RoomPatterns([])


@pytest.mark.speech
async def test_partial_captions_come_while_speaking_and_the_final_follows(speak):
    speech = silence(0.5) + speak(f"{NUMBERS}, {GREETING}") + silence(1.0)
    output, store = RecordingOutput(), TranscriptStore()
    recognizer = SpeechRecognizer(store=store, workers=1, partial_every=0.5)
    await recognizer.start(output)
    await recognizer.wait_ready()
    for chunk in chunks("lab", "peer-ada", "Ada", speech, time.time()):
        await recognizer.on_audio(chunk)
        await asyncio.sleep(chunk.duration / 2)  # about twice real time
    await recognizer.participant_left("lab", "peer-ada")
    await recognizer.close()

    captions = output.of("transcript", "peer-ada")
    finals = [c for c in captions if c["final"]]
    assert finals and recognizer.stats.partials >= 2, captions
    for final in finals:
        partials = [c for c in captions if not c["final"] and c["start"] == final["start"]]
        if partials:  # every partial comes before the final of its utterance
            assert captions.index(partials[-1]) < captions.index(final)
            assert partials[0]["end"] <= final["end"]
    assert [entry["text"] for entry in store.entries("lab")] == [c["text"] for c in finals]

"""What live captions cost: CPU per speaking participant, against real time.

Speech comes from espeak-ng (converted to 16 kHz mono s16le by sox), is cut by the
same VoiceSegmenter the server uses and transcribed by PocketSphinxRecognizer in this
process, timing each decode with the thread's CPU clock. Each figure is the median of
``--runs`` runs. It also times the parts that run on the event loop (VAD, recording).

    .venv/bin/python bench/stt_bench.py [--seconds 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.audio import (
    BYTES_PER_SECOND,
    AudioChunk,
    PocketSphinxRecognizer,
    VoiceSegmenter,
    WavRecorder,
)
from server.audio.stt import PARTIAL_EVERY, next_partial_due

SENTENCES = [
    ("en-us+m3", "Good morning everyone, thank you for joining the weekly planning meeting."),
    ("en-us+f3", "I think we should ship the new release on Thursday after the last review."),
    ("en-us+m1", "The numbers look better than last quarter, but the costs are still too high."),
    ("en-us+m7", "Can you share your screen so that we can look at the design together?"),
    ("en-us", "Let us take a short break and come back in ten minutes to finish the list."),
]
CHUNK = 640


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def speech(seconds: float, folder: Path) -> bytes:
    """At least ``seconds`` of speech, sentences separated by 0.8 s pauses."""
    pieces: list[bytes] = []
    total = 0
    index = 0
    while total < seconds * BYTES_PER_SECOND:
        voice, text = SENTENCES[index % len(SENTENCES)]
        raw, converted = folder / "raw.wav", folder / "16k.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        to_16k = ["-D", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer"]
        subprocess.run(["sox", str(raw), *to_16k, str(converted)], check=True)
        with wave.open(str(converted)) as wav:
            piece = wav.readframes(wav.getnframes()) + bytes(int(0.8 * BYTES_PER_SECOND))
        pieces.append(piece)
        total += len(piece)
        index += 1
    return b"".join(pieces)


def segment(audio: bytes) -> tuple[list[bytes], float]:
    """The utterances in ``audio`` and the VAD's CPU seconds per second of audio."""
    segmenter = VoiceSegmenter()
    found: list[bytes] = []
    started = time.thread_time()
    for offset in range(0, len(audio), CHUNK):
        found += [u.pcm for u in segmenter.feed(audio[offset : offset + CHUNK], offset / 32000)]
    last = segmenter.flush()
    vad_cpu = time.thread_time() - started
    if last is not None:
        found.append(last.pcm)
    return found, vad_cpu / (len(audio) / BYTES_PER_SECOND)


def partials_cost(recognizer: PocketSphinxRecognizer, utterances: list[bytes]) -> float:
    """CPU seconds of --stt-partials' extra decodes (as if the worker were always free)."""
    cpu = 0.0
    for pcm in utterances:
        length, due = len(pcm) / BYTES_PER_SECOND, PARTIAL_EVERY
        while due < length:
            started = time.thread_time()
            recognizer.transcribe(pcm[: int(due * BYTES_PER_SECOND) // 2 * 2])
            cpu += time.thread_time() - started
            due = next_partial_due(due, PARTIAL_EVERY)
    return cpu


def recording_cost(audio: bytes, folder: Path) -> float:
    """CPU seconds per second of audio that recording one participant costs (loop + thread)."""

    async def record() -> None:
        recorder = WavRecorder(folder / "rec")
        for offset in range(0, len(audio), CHUNK):
            pcm = audio[offset : offset + CHUNK]
            await recorder.on_audio(AudioChunk("bench", "p", "Bench", pcm, offset / 32000))
        await recorder.close()

    started = time.process_time()
    asyncio.run(record())
    return (time.process_time() - started) / (len(audio) / BYTES_PER_SECOND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; figures are medians")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        audio = speech(args.seconds, folder)
        audio_seconds = len(audio) / BYTES_PER_SECOND
        utterances, vad_cost = segment(audio)
        speech_seconds = sum(len(u) for u in utterances) / BYTES_PER_SECOND

        load_started = time.process_time()
        recognizer = PocketSphinxRecognizer()
        load_cpu = time.process_time() - load_started
        recognizer.transcribe(utterances[0])  # first decode pays for lazy set-up

        cpu_runs: list[float] = []
        partial_runs: list[float] = []
        wall_runs: list[float] = []
        longest: list[float] = []
        for _ in range(args.runs):
            cpu = wall = worst = 0.0
            for pcm in utterances:
                cpu_started, wall_started = time.thread_time(), time.perf_counter()
                recognizer.transcribe(pcm)
                cpu += time.thread_time() - cpu_started
                wall += time.perf_counter() - wall_started
                worst = max(worst, time.perf_counter() - wall_started)
            cpu_runs.append(cpu)
            wall_runs.append(wall)
            longest.append(worst)
            partial_runs.append(partials_cost(recognizer, utterances))
        record_cost = statistics.median(recording_cost(audio, folder) for _ in range(args.runs))

    cpu = statistics.median(cpu_runs)
    wall = statistics.median(wall_runs)
    per_speech = cpu / speech_seconds
    say(f"audio: {audio_seconds:.1f} s, {len(utterances)} utterances, {speech_seconds:.1f} s")
    say(f"PocketSphinx load: {load_cpu:.2f} s CPU")
    say(
        f"PocketSphinx decode, median of {args.runs}: {cpu:.2f} s CPU ({wall:.2f} s wall) "
        f"for {speech_seconds:.1f} s of speech; runs: "
        + ", ".join(f"{run:.2f}" for run in cpu_runs)
    )
    say(
        f"  = {per_speech:.0%} of a core per continuously speaking participant "
        f"(real-time factor {wall / speech_seconds:.2f}; one worker keeps up with "
        f"{1 / per_speech:.1f} people talking at once)"
    )
    say(f"  = {cpu / audio_seconds:.0%} of a core over this audio with its pauses")
    say(f"  longest decode (caption delay after the utterance ends): {max(longest):.2f} s")
    partials = statistics.median(partial_runs)
    say(
        f"with --stt-partials: +{partials:.2f} s CPU -> {(cpu + partials) / cpu:.1f}x, "
        f"{(cpu + partials) / speech_seconds:.0%} of a core per continuously speaking participant"
    )
    say(f"VAD on the event loop: {vad_cost:.2%} of a core per participant (speaking or not)")
    say(f"recording: {record_cost:.2%} of a core per participant")


if __name__ == "__main__":
    main()

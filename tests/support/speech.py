"""Spoken test audio: espeak-ng speech converted by sox, cached per test session."""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

Speaker = Callable[..., bytes]


def speech_maker(folder: Path) -> Speaker:
    """``make(text, rate=16000, voice="en-us+m3", speed=140)`` -> mono s16le PCM.

    sox runs without dither, so every run hears exactly the same audio.
    """
    assert shutil.which("espeak-ng") and shutil.which("sox"), "install espeak-ng and sox"
    cache: dict[str, bytes] = {}

    def make(text: str, rate: int = 16000, voice: str = "en-us+m3", speed: int = 140) -> bytes:
        key = f"{voice}-{speed}-{rate}-{text}"
        if key not in cache:
            raw, converted = folder / f"{len(cache)}.wav", folder / f"{len(cache)}-out.wav"
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True
            )
            resample = ["-D", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer"]
            subprocess.run(["sox", str(raw), *resample, str(converted)], check=True)
            with wave.open(str(converted)) as wav:
                cache[key] = wav.readframes(wav.getnframes())
        return cache[key]

    return make

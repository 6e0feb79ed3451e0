"""Synthetic media that identifies its sender, and checks that recognise it on arrival.

Each test publisher sends a solid colour and a pure tone of its own; a receiver
decodes what it gets and names the sender by colour and by tone frequency.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, VideoStreamTrack
from av import AudioFrame, VideoFrame

RGB = tuple[int, int, int]

COLOURS: list[RGB] = [
    (230, 30, 30),
    (30, 200, 40),
    (40, 60, 230),
    (230, 220, 30),
    (220, 40, 220),
    (30, 220, 220),
    (250, 140, 20),
    (140, 60, 200),
]
TONES: list[float] = [440.0, 620.0, 860.0, 1180.0, 1500.0, 1820.0, 2240.0, 2680.0]
AUDIO_RATE = 48000


class ColourTrack(VideoStreamTrack):
    """Solid-colour video, paced like a camera by aiortc's VideoStreamTrack (30 fps)."""

    def __init__(self, rgb: RGB, width: int = 160, height: int = 120) -> None:
        super().__init__()
        self.rgb = rgb
        self._image = np.full((height, width, 3), rgb, dtype=np.uint8)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class NoiseTrack(VideoStreamTrack):
    """Random pixels every frame: nothing to compress, so the encoder sends all it may."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self._shape = (height, width, 3)
        self._random = np.random.default_rng(7)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = self._random.integers(0, 256, self._shape, dtype=np.uint8)
        frame = VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(MediaStreamTrack):
    """A continuous sine tone, 20 ms mono frames at 48 kHz; amplitude 0 sends silence."""

    kind = "audio"

    def __init__(self, frequency: float, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        samples_per_frame = int(AUDIO_PTIME * AUDIO_RATE)
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._samples / AUDIO_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        n = np.arange(self._samples, self._samples + samples_per_frame)
        wave = self.amplitude * np.sin(2 * np.pi * self.frequency * n / AUDIO_RATE)
        frame = AudioFrame.from_ndarray(
            (wave * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._samples += samples_per_frame
        return frame


class PcmTrack(MediaStreamTrack):
    """Plays mono s16le PCM once, paced in real time, then silence for as long as asked."""

    kind = "audio"

    def __init__(self, pcm: bytes, rate: int = AUDIO_RATE) -> None:
        super().__init__()
        self._pcm = pcm
        self._rate = rate
        self._samples = 0
        self._start: float | None = None
        self.started_at: float | None = None  # wall clock of the first frame

    async def recv(self) -> AudioFrame:
        per_frame = int(AUDIO_PTIME * self._rate)
        if self._start is None:
            self._start, self.started_at = time.monotonic(), time.time()
        else:
            wait = self._start + self._samples / self._rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        data = self._pcm[2 * self._samples : 2 * (self._samples + per_frame)]
        data += bytes(2 * per_frame - len(data))
        frame = AudioFrame.from_ndarray(
            np.frombuffer(data, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self._rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, self._rate)
        self._samples += per_frame
        return frame


def mean_colour(frame: VideoFrame) -> RGB:
    image = frame.to_ndarray(format="rgb24")
    red, green, blue = image.reshape(-1, 3).mean(axis=0)
    return round(red), round(green), round(blue)


def nearest_colour(rgb: RGB, palette: list[RGB] = COLOURS) -> RGB:
    return min(palette, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, rgb, strict=True)))


def colour_matches(rgb: RGB, expected: RGB, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected, strict=True))


def dominant_frequency(frames: list[AudioFrame]) -> float:
    """The strongest frequency in a run of decoded audio frames (first channel)."""
    chunks = []
    for frame in frames:
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if frame.format.is_planar:
            chunks.append(data[0])
        else:
            chunks.append(data.reshape(-1, channels)[:, 0])
    signal = np.concatenate(chunks).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    spectrum[:10] = 0  # ignore DC and rumble
    rate = frames[0].sample_rate
    return float(np.argmax(spectrum) * rate / len(signal))


def rms(frames: list[AudioFrame]) -> float:
    signal = np.concatenate([f.to_ndarray().ravel() for f in frames]).astype(np.float64)
    return float(np.sqrt(np.mean(signal**2)))


async def collect(track: MediaStreamTrack, count: int, timeout: float = 15.0) -> list:
    """The next ``count`` frames of ``track``."""

    async def gather() -> list:
        return [await track.recv() for _ in range(count)]

    return await asyncio.wait_for(gather(), timeout)


async def identify_video(track: MediaStreamTrack, frames: int = 5) -> RGB:
    """The palette colour of a received video track (after skipping start-up frames)."""
    received = await collect(track, frames + 3)
    return nearest_colour(mean_colour(received[-1]))


async def identify_audio(track: MediaStreamTrack, seconds: float = 0.3) -> float:
    """The tone a received audio track carries (tones are 180 Hz or more apart)."""
    received = await collect(track, int(seconds / AUDIO_PTIME) + 3)
    return dominant_frequency(received[3:])


def nearest_tone(frequency: float, tones: list[float] = TONES) -> float:
    return min(tones, key=lambda t: abs(t - frequency))

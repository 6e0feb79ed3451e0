"""Headless Debian Chromium driven by Playwright, with fake camera and microphone content.

Each browser can be given its own Y4M video (a solid colour) and WAV audio (a tone),
so a test can tell which participant's media a page is showing.
"""

from __future__ import annotations

import math
import shutil
import struct
import wave
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, Playwright

from tests.support.polling import eventually

RGB = tuple[int, int, int]

BASE_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # Speeds up local ICE; the product itself does not depend on it (see shared notes).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError(
            "Debian's chromium is not installed: run scripts/test.sh, which installs it"
        )
    return path


def rgb_to_yuv(rgb: RGB) -> tuple[int, int, int]:
    """BT.601 limited range, as Chromium's Y4M reader expects."""
    r, g, b = rgb
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return round(y), round(u), round(v)


def write_y4m(path: Path, rgb: RGB, width: int = 320, height: int = 240, frames: int = 30) -> Path:
    """A solid-colour video file for ``--use-file-for-fake-video-capture``."""
    y, u, v = rgb_to_yuv(rgb)
    frame = (
        bytes([y]) * (width * height)
        + bytes([u]) * (width * height // 4)
        + bytes([v]) * (width * height // 4)
    )
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + frame)
    return path


def write_tone(
    path: Path,
    frequency: float,
    seconds: float = 2.0,
    rate: int = 48000,
    amplitude: int = 12000,
) -> Path:
    """A sine tone WAV for ``--use-file-for-fake-audio-capture`` (amplitude 0: silence)."""
    samples = (
        int(amplitude * math.sin(2 * math.pi * frequency * n / rate))
        for n in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return path


async def launch(
    playwright: Playwright,
    *,
    video: Path | None = None,
    audio: Path | None = None,
    extra_flags: list[str] | None = None,
) -> Browser:
    flags = list(BASE_FLAGS)
    if video is not None:
        flags.append(f"--use-file-for-fake-video-capture={video}")
    if audio is not None:
        flags.append(f"--use-file-for-fake-audio-capture={audio}")
    flags.extend(extra_flags or [])
    return await playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=flags
    )


async def launch_with_identity(
    playwright: Playwright,
    folder: Path,
    label: str,
    colour: RGB,
    frequency: float,
    amplitude: int = 12000,
) -> Browser:
    """A browser whose fake camera shows ``colour`` and whose fake microphone plays a tone."""
    return await launch(
        playwright,
        video=write_y4m(folder / f"{label}.y4m", colour),
        audio=write_tone(folder / f"{label}.wav", frequency, amplitude=amplitude),
    )


AVERAGE_COLOUR_JS = """
(video) => {
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = 32; canvas.height = 24;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0, 32, 24);
  const data = context.getImageData(0, 0, 32, 24).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) {
    sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2];
  }
  const pixels = data.length / 4;
  return sum.map((value) => Math.round(value / pixels));
}
"""

FRAMES_DECODED_JS = """
async (pc) => {
  if (!pc) return 0;
  const stats = await pc.getStats();
  let frames = 0;
  stats.forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      frames += report.framesDecoded || 0;
    }
  });
  return frames;
}
"""


async def average_colour(page: Page, selector: str) -> list[int] | None:
    """Mean RGB of what a ``<video>`` element currently shows, or None before it plays."""
    handle = await page.query_selector(selector)
    return await page.evaluate(AVERAGE_COLOUR_JS, handle)


async def frames_decoded(page: Page, connection_expression: str) -> int:
    """Video frames decoded so far by the RTCPeerConnection the expression names."""
    return await page.evaluate(f"() => ({FRAMES_DECODED_JS})({connection_expression})")


def close_to(actual: list[int] | None, expected: RGB, tolerance: int = 45) -> bool:
    return actual is not None and all(
        abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)
    )


async def wait_until(check: Any, timeout: float = 20.0, interval: float = 0.25) -> Any:
    """Poll an async ``check()`` until it returns something truthy (pages are slow to ask)."""
    return await eventually(check, timeout, interval)

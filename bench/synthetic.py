"""Pre-encoded VP8 video for load tests: near-zero CPU to publish, identifiable when decoded.

Each publisher's clip is encoded once (640x360, 15 fps, ~500 kbps, a keyframe
every second) and then sent in a loop. Every picture carries its publisher's
colour in the top-left corner and its frame number as a row of black and white
blocks, so a decoding subscriber can tell whose frame it got and how late it is;
the rest of the picture is moving noise, so the encoder really spends ~500 kbps.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack

WIDTH, HEIGHT, FPS = 640, 360, 15
BITRATE = 500_000
GOP = FPS  # one keyframe per second
CLIP_FRAMES = 4 * FPS
BITS, BLOCK = 12, 32  # frame number: 12 blocks of 32x32 pixels under the colour patch
PALETTE = [
    (230, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30),
    (220, 40, 220), (30, 220, 220), (250, 140, 20), (140, 60, 200),
    (250, 250, 250), (120, 120, 120), (160, 90, 40), (40, 110, 90),
    (200, 160, 200), (90, 40, 40), (40, 40, 100), (180, 220, 120),
]  # fmt: skip
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


@dataclass(frozen=True)
class EncodedClip:
    """A looped clip: encoded frames, which are keyframes, and a hash per frame."""

    identity: int
    frames: list[bytes]
    keyframes: list[bool]

    def digest_index(self) -> dict[bytes, int]:
        return {frame_digest(data): index for index, data in enumerate(self.frames)}


def frame_digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def picture(identity: int, number: int, rng: np.random.Generator) -> np.ndarray:
    """Colour patch, frame-number blocks, a moving gradient and a patch of noise."""
    columns = (np.arange(WIDTH) * 2 + number * 8) % 256
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:] = columns[None, :, None].astype(np.uint8)
    image[HEIGHT // 2 :, WIDTH - WIDTH // 3 :] = rng.integers(0, 256, (HEIGHT // 2, WIDTH // 3, 3))
    image[: 2 * BLOCK, : BITS * BLOCK] = PALETTE[identity % len(PALETTE)]
    for bit in range(BITS):
        value = 255 if number >> bit & 1 else 0
        image[2 * BLOCK : 3 * BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = value
    return image


def encode_clip(identity: int) -> EncodedClip:
    """Encode ``CLIP_FRAMES`` pictures of publisher ``identity`` with libvpx."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.bit_rate = BITRATE
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.time_base = fractions.Fraction(1, FPS)
    codec.gop_size = GOP
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(identity)
    frames, keyframes = [], []
    for number in range(CLIP_FRAMES):
        frame = av.VideoFrame.from_ndarray(picture(identity, number, rng), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = number
        if number % GOP == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in codec.encode(frame):
            frames.append(bytes(packet))
            keyframes.append(packet.is_keyframe)
    return EncodedClip(identity, frames, keyframes)


CACHE = Path(__file__).resolve().parent / "results" / "clips"


def load_clip(identity: int) -> EncodedClip:
    """``encode_clip(identity)``, cached on disk: encoding takes about a second per clip."""
    path = CACHE / f"clip-{identity}-{WIDTH}x{HEIGHT}-{FPS}-{BITRATE}-{CLIP_FRAMES}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())
    clip = encode_clip(identity)
    CACHE.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    temporary.write_bytes(pickle.dumps(clip))
    temporary.replace(path)
    return clip


def read_picture(frame: av.VideoFrame) -> tuple[int, int]:
    """(publisher identity, frame number) read back from a decoded picture."""
    image = frame.to_ndarray(format="rgb24")
    colour = image[8 : 2 * BLOCK - 8, 8 : BITS * BLOCK - 8].reshape(-1, 3).mean(axis=0)
    identity = min(
        range(len(PALETTE)),
        key=lambda i: sum((a - b) ** 2 for a, b in zip(PALETTE[i], colour, strict=True)),
    )
    number = 0
    for bit in range(BITS):
        cell = image[2 * BLOCK + 8 : 3 * BLOCK - 8, bit * BLOCK + 8 : (bit + 1) * BLOCK - 8]
        number |= (cell.mean() > 128) << bit
    return identity, number


class ClipTrack(MediaStreamTrack):
    """Sends a pre-encoded clip in a loop at 15 fps as ``av.Packet`` (no encoding).

    Frame ``n`` of the loop is sent at a known time (``sent_at``), which lets a
    subscriber measure latency; a keyframe request jumps to the next keyframe,
    as a real encoder would produce one.
    """

    kind = "video"

    def __init__(self, clip: EncodedClip) -> None:
        super().__init__()
        self.clip = clip
        self._index = 0
        self._count = 0
        self._start: float | None = None
        self.sent_at: dict[int, float] = {}  # clip frame number -> last wall-clock send

    def request_keyframe(self) -> None:
        following = range(self._index, self._index + len(self.clip.frames))
        frames = len(self.clip.frames)
        self._index = next(i % frames for i in following if self.clip.keyframes[i % frames])

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._count / FPS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        index = self._index
        packet = av.Packet(self.clip.frames[index])
        packet.pts = self._count * (90000 // FPS)
        packet.time_base = VIDEO_TIME_BASE
        self.sent_at[index] = time.time()
        self._index = (index + 1) % len(self.clip.frames)
        self._count += 1
        return packet


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether a whole encoded frame (as aiortc's depayloader yields it) is a keyframe."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return bool(data) and not data[0] & 0x01  # P bit clear: key frame (RFC 6386 9.1)
    if mime == "video/h264":  # Annex B: an IDR slice or an SPS
        nal_types = [
            data[at + 3] & 0x1F
            for at in range(len(data) - 3)
            if data[at : at + 3] == b"\x00\x00\x01"
        ]
        return any(nal_type in (5, 7) for nal_type in nal_types)
    return True  # audio frames are independent

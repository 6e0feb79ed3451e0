"""Background blur on the bundled page, in headless Chromium, with the real segmentation model.

Ada's fake camera films a drawn person (head with dark eyes, shoulders) in front of a
black-and-white checkerboard. Bob checks what arrives: with blur on, the checkerboard
behind her is smoothed away while her eyes stay sharp (the model found the person);
with blur off, the checkerboard is back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Page, async_playwright

from tests.support.browser import launch, wait_until, write_tone
from tests.support.page import open_and_join, tile, wait_decoding, wait_visible

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 320, 240

# What a tile's video shows: how sharp the background is (mean step between neighbouring
# pixels in the top-left corner, all checkerboard) and how dark the darkest pixel of the
# face is (her eyes: near black when sharp, washed into the skin when blurred).
SHARPNESS_JS = """
(video) => {
  if (!video || !video.videoWidth) return null;
  const w = video.videoWidth, h = video.videoHeight;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(video, 0, 0, w, h);
  const data = context.getImageData(0, 0, w, h).data;
  const luma = (x, y) => {
    const i = (y * w + x) * 4;
    return 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
  };
  let steps = 0, count = 0;
  for (let y = 0; y < Math.floor(h * 0.2); y += 1)
    for (let x = 0; x < Math.floor(w * 0.25) - 1; x += 1) {
      steps += Math.abs(luma(x + 1, y) - luma(x, y));
      count += 1;
    }
  let darkest = 255;
  for (let y = Math.floor(h * 0.38); y < Math.floor(h * 0.46); y += 1)
    for (let x = Math.floor(w * 0.42); x < Math.floor(w * 0.58); x += 1)
      darkest = Math.min(darkest, luma(x, y));
  return { background: steps / count, eyes: darkest };
}
"""


def person_in_front_of_a_checkerboard() -> np.ndarray:
    """An RGB picture (HEIGHT × WIDTH × 3) the segmentation model takes for a person."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    board = ((x // 20 + y // 20) % 2 * 255).astype(np.uint8)
    picture = np.stack([board] * 3, axis=-1)

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1

    picture[ellipse(160, 260, 110, 90)] = (32, 80, 160)  # shoulders
    picture[(x >= 140) & (x < 180) & (y >= 140) & (y < 180)] = (224, 176, 144)  # neck
    picture[ellipse(160, 105, 45, 58)] = (224, 176, 144)  # head
    picture[ellipse(160, 62, 46, 24) & (y <= 62)] = (48, 32, 16)  # hair
    picture[ellipse(143, 100, 5, 5) | ellipse(177, 100, 5, 5)] = (0, 0, 0)  # eyes
    picture[(x >= 148) & (x < 172) & (y >= 130) & (y < 136)] = (160, 64, 64)  # mouth
    return picture


def write_picture_y4m(path: Path, rgb: np.ndarray, frames: int = 30) -> Path:
    """A still picture as a video file for ``--use-file-for-fake-video-capture``."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256

    def half(plane: np.ndarray) -> np.ndarray:  # 4:2:0: one chroma sample per 2×2 pixels
        return plane.reshape(HEIGHT // 2, 2, WIDTH // 2, 2).mean(axis=(1, 3))

    frame = b"".join(
        np.clip(np.round(plane), 0, 255).astype(np.uint8).tobytes()
        for plane in (luma, half(u), half(v))
    )
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + frame)
    return path


@pytest.fixture
def relay(server_pool):
    return server_pool.get("--media", "relay")


async def looks(page: Page, nickname: str) -> dict[str, float] | None:
    handle = await page.query_selector(f"{tile(nickname)} video")
    return await page.evaluate(SHARPNESS_JS, handle)


async def set_blur(page: Page, on: bool) -> None:
    await page.click("#open-devices")
    await wait_visible(page, "#blur-field")
    await page.set_checked("#blur-toggle", on)
    await wait_until(lambda: page.is_enabled("#blur-toggle"))
    assert await page.is_checked("#blur-toggle") == on
    assert await page.is_hidden("#devices-error")
    await page.click("#devices-dialog button[type=submit]")


async def test_blur_hides_the_room_behind_you_not_you(relay, room, tmp_path):
    name = room("blur")
    camera = write_picture_y4m(tmp_path / "person.y4m", person_in_front_of_a_checkerboard())
    async with async_playwright() as playwright:
        filming = await launch(playwright, video=camera, audio=write_tone(tmp_path / "a.wav", 440))
        watching = await launch(playwright)
        try:
            ada = await open_and_join(filming, relay.url, name, "Ada")
            bob = await open_and_join(watching, relay.url, name, "Bob")
            await wait_decoding(bob, ["Ada"])

            async def sharp() -> dict | None:
                seen = await looks(bob, "Ada")
                return seen if seen and seen["background"] > 6 and seen["eyes"] < 60 else None

            before = await wait_until(sharp)

            await set_blur(ada, True)

            async def blurred_around_her_on(page: Page) -> dict | None:
                """The checkerboard smoothed away, her eyes still sharp (the model found her)."""
                seen = await looks(page, "Ada")
                if seen and seen["background"] < before["background"] / 4 and seen["eyes"] < 60:
                    return seen
                return None

            await wait_until(lambda: blurred_around_her_on(bob))
            # Her own tile shows what the others see.
            await wait_until(lambda: blurred_around_her_on(ada))

            await set_blur(ada, False)
            await wait_until(sharp)

            # Remembered on this device: after a reload (which rejoins) she is still blurred.
            await set_blur(ada, True)
            await ada.reload()
            await wait_until(lambda: blurred_around_her_on(ada))
            await wait_until(lambda: blurred_around_her_on(bob))
        finally:
            await filming.close()
            await watching.close()

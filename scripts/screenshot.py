"""Regenerate docs/screenshot.png: a three-person call on the bundled page, one presenting.

Starts a relay-mode server and three headless Chromiums, each filming its own synthetic
"person"; one shares a synthetic slide as their screen, one raises a hand, and the script
photographs another participant's page with the chat open.

    .venv/bin/python scripts/screenshot.py [--output docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
from playwright.async_api import Browser, Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the test helpers live in the project, not in the venv

from tests.support.browser import launch, write_tone  # noqa: E402
from tests.support.page import (  # noqa: E402
    join,
    open_and_join,
    tile,
    wait_decoding,
    wait_for_remotes,
    wait_visible,
)
from tests.support.server import ServerProcess  # noqa: E402

ROOM = "design-review"
VIEWPORT = {"width": 1280, "height": 720}
WIDTH, HEIGHT = 640, 360

# Who is in the call: name, backdrop colours (top, bottom), figure colour, microphone tone.
# Only Ada makes a sound, so the server picks her as the active speaker.
PEOPLE = [
    ("Ada Lovelace", (38, 70, 120), (120, 160, 210), (20, 32, 58), 440.0),
    ("Grace Hopper", (120, 62, 40), (232, 176, 120), (58, 28, 20), 0.0),
    ("Alan Turing", (30, 90, 70), (120, 200, 160), (14, 44, 34), 0.0),
]
# Ada's "screen": a slide drawn on a canvas, handed to the page as getDisplayMedia's result.
SLIDE_SCREEN_JS = """
navigator.mediaDevices.getDisplayMedia = async () => {
  const canvas = Object.assign(document.createElement("canvas"), { width: 1280, height: 720 });
  const c = canvas.getContext("2d");
  const draw = () => {
    c.fillStyle = "#f6f4ef"; c.fillRect(0, 0, 1280, 720);
    c.fillStyle = "#1d3557"; c.fillRect(0, 0, 1280, 120);
    c.fillStyle = "#ffffff"; c.font = "bold 54px sans-serif";
    c.fillText("Lobby redesign: results", 60, 82);
    c.fillStyle = "#1d3557"; c.font = "36px sans-serif";
    ["Join time: 9.1 s to 3.4 s", "Camera check before joining", "Works on phones"]
      .forEach((line, i) => c.fillText("•  " + line, 70, 220 + i * 70));
    const bars = [[0.42, "#e76f51"], [0.64, "#f4a261"], [0.88, "#2a9d8f"]];
    bars.forEach(([value, colour], i) => {
      c.fillStyle = colour; c.fillRect(820 + i * 130, 620 - value * 420, 90, value * 420);
    });
    c.fillStyle = "#1d3557"; c.fillRect(790, 620, 420, 4);
  };
  draw();
  setInterval(draw, 100);
  return canvas.captureStream(15);
};
"""

CHAT = [
    (0, "Morning! Shall we start with the new lobby?"),
    (2, "Sure, I'm on the train: camera off for now."),
    (1, "Looks great on my phone too. Ship it?"),
]


def ellipse(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], radii: tuple[float, float]
) -> np.ndarray:
    """Coverage (0..1) of an anti-aliased ellipse at every pixel."""
    distance = np.hypot((x - centre[0]) / radii[0], (y - centre[1]) / radii[1])
    return np.clip((1 - distance) * min(radii) / 1.5, 0, 1)


def portrait(top: tuple[int, ...], bottom: tuple[int, ...], figure: tuple[int, ...]) -> np.ndarray:
    """An RGB frame: a soft gradient backdrop with a head-and-shoulders silhouette."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    blend = (y / HEIGHT)[..., None]
    image = (1 - blend) * np.array(top, np.float32) + blend * np.array(bottom, np.float32)
    glow = np.exp(-(((x - WIDTH * 0.72) / 260) ** 2 + ((y - HEIGHT * 0.2) / 200) ** 2))
    image += glow[..., None] * 40
    centre = WIDTH / 2
    head = ellipse(x, y, (centre, 140), (54, 64))
    neck = ellipse(x, y, (centre, 205), (34, 40))
    shoulders = ellipse(x, y, (centre, 420), (200, 180))
    cover = np.maximum(np.maximum(head, neck), shoulders)[..., None]
    image = (1 - cover) * image + cover * np.array(figure, np.float32)
    return np.clip(image, 0, 255)


def write_portrait_y4m(path: Path, rgb: np.ndarray, frames: int = 4) -> Path:
    """A Y4M clip of one still frame, for Chromium's fake camera (BT.601 limited range)."""
    r, g, b = (rgb[..., channel] for channel in range(3))
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256

    def plane(values: np.ndarray, step: int) -> bytes:
        return np.round(values[::step, ::step]).astype(np.uint8).tobytes()

    frame = plane(y, 1) + plane(u, 2) + plane(v, 2)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + frame)
    return path


async def send_chat(page: Page, text: str) -> None:
    await page.fill("#chat-input", text)
    await page.press("#chat-input", "Enter")
    await page.wait_for_selector(f"#chat-log li:has-text({text!r})")


async def stage_call(browsers: list[Browser], url: str) -> Page:
    """Join everyone, set the scene, and return the page to photograph (Grace's)."""
    names = [person[0] for person in PEOPLE]
    # Ada, the one speaking, joins last: the server announces a new active speaker only to
    # those already in the room.
    grace = await open_and_join(browsers[1], url, ROOM, names[1])
    alan = await open_and_join(browsers[2], url, ROOM, names[2])
    presenter = await browsers[0].new_context()
    await presenter.add_init_script(SLIDE_SCREEN_JS)
    ada = await presenter.new_page()
    await ada.goto(url)
    await join(ada, ROOM, names[0])
    pages = [ada, grace, alan]
    for page, name in zip(pages, names, strict=True):
        await page.set_viewport_size(VIEWPORT)
        await wait_for_remotes(page, [other for other in names if other != name])
    await wait_decoding(grace, ["Ada Lovelace"])
    await alan.click("#toggle-cam")
    await grace.click("#toggle-mic")
    await wait_visible(grace, f"{tile('Alan Turing')} .placeholder")
    for page in pages:
        await page.click("#toggle-chat")
    for author, text in CHAT:
        await send_chat(pages[author], text)
    await wait_visible(grace, f"{tile('Ada Lovelace')}[data-speaking]")
    await alan.click("#raise-hand")
    await wait_visible(grace, f"{tile('Alan Turing')} .hand-badge")
    await ada.click("#share-screen")
    await wait_visible(grace, ".tile[data-screen][data-featured]")
    await grace.wait_for_function(
        "() => document.querySelector('.tile[data-screen] video')?.videoWidth > 0"
    )
    await ada.wait_for_timeout(1500)  # let every tile settle on a fresh frame
    await grace.focus("#chat-input")
    await grace.evaluate("() => document.activeElement.blur()")
    return grace


async def main(output: Path) -> None:
    server = ServerProcess(args=("--media", "relay")).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            async with async_playwright() as playwright:
                browsers = []
                for index, (_, top, bottom, figure, tone) in enumerate(PEOPLE):
                    video = write_portrait_y4m(tmp / f"{index}.y4m", portrait(top, bottom, figure))
                    audio = write_tone(tmp / f"{index}.wav", tone)
                    browsers.append(await launch(playwright, video=video, audio=audio))
                try:
                    page = await stage_call(browsers, server.url)
                    await page.screenshot(path=str(output))
                finally:
                    for browser in browsers:
                        await browser.close()
    finally:
        server.stop()
    print(f"wrote {output}")  # noqa: T201 (a command-line script reports its result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    asyncio.run(main(parser.parse_args().output))

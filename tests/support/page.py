"""Drive roomrelay's bundled page (static/) with Playwright: open the lobby, join, read tiles.

Everything waits by polling with generous timeouts, so the tests hold on a loaded machine.
"""

from __future__ import annotations

import base64
from typing import Any

from playwright.async_api import Browser, Page

from tests.support.browser import RGB, average_colour, close_to, wait_until

TIMEOUT = 30.0
PC = "window.roomrelay.pc"

# Frames decoded per remote tile: the tile's video track, matched to the inbound-rtp stats
# of the page's RTCPeerConnection by track id.
FRAMES_BY_NICKNAME_JS = """
async () => {
  const pc = window.roomrelay.pc;
  if (!pc) return {};
  const decoded = new Map();
  (await pc.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "video") {
      decoded.set(report.trackIdentifier, report.framesDecoded || 0);
    }
  });
  const result = {};
  for (const tile of document.querySelectorAll(".tile:not([data-self]):not([data-screen])")) {
    const track = tile.querySelector("video").srcObject?.getVideoTracks()[0];
    result[tile.dataset.nickname] = track ? decoded.get(track.id) ?? 0 : 0;
  }
  return result;
}
"""


# Audio packets received for one remote tile's audio track.
AUDIO_PACKETS_JS = """
async (nickname) => {
  const tile = document.querySelector(`.tile[data-nickname="${nickname}"]`);
  const track = tile?.querySelector("video").srcObject?.getAudioTracks()[0];
  const pc = window.roomrelay.pc;
  if (!track || !pc) return 0;
  let packets = 0;
  (await pc.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp" && report.trackIdentifier === track.id) {
      packets = report.packetsReceived || 0;
    }
  });
  return packets;
}
"""


def tile(nickname: str) -> str:
    """CSS selector of a participant's tile."""
    return f'.tile[data-nickname="{nickname}"]'


async def open_lobby(browser: Browser, url: str, **context: Any) -> Page:
    """A fresh browser context (its own storage) showing the lobby."""
    page = await (await browser.new_context(**context)).new_page()
    await page.goto(url)
    await page.wait_for_selector("#lobby:not([hidden])")
    return page


async def fill_and_join(page: Page, room: str, nickname: str) -> None:
    """Fill in the lobby form and press the join button (whatever its label says)."""
    await page.fill("#room-input", room)
    await page.fill("#nickname-input", nickname)
    await page.click("#join-button")


async def join(page: Page, room: str, nickname: str) -> None:
    await fill_and_join(page, room, nickname)
    await page.wait_for_selector("#call:not([hidden])", timeout=TIMEOUT * 1000)


async def open_and_join(browser: Browser, url: str, room: str, nickname: str) -> Page:
    page = await open_lobby(browser, url)
    await join(page, room, nickname)
    return page


async def remote_nicknames(page: Page) -> list[str]:
    return sorted(
        await page.eval_on_selector_all(
            ".tile:not([data-self]):not([data-screen])",
            "(tiles) => tiles.map((t) => t.dataset.nickname)",
        )
    )


async def wait_for_remotes(page: Page, nicknames: list[str], timeout: float = TIMEOUT) -> None:
    """Wait until the page shows exactly these remote tiles."""
    wanted = sorted(nicknames)

    async def matches() -> bool:
        return await remote_nicknames(page) == wanted

    await wait_until(matches, timeout)


async def frames_by_nickname(page: Page) -> dict[str, int]:
    return await page.evaluate(FRAMES_BY_NICKNAME_JS)


async def inbound_audio_packets(page: Page, nickname: str) -> int:
    return await page.evaluate(AUDIO_PACKETS_JS, nickname)


async def wait_decoding(page: Page, nicknames: list[str], timeout: float = TIMEOUT) -> None:
    """Wait until every named remote tile's video has decoded frames, and more since then."""
    first: dict[str, int] = {}

    async def some_frames() -> bool:
        first.update(await frames_by_nickname(page))
        return all(first.get(name, 0) > 0 for name in nicknames)

    async def more_frames() -> bool:
        now = await frames_by_nickname(page)
        return all(now.get(name, 0) > first[name] for name in nicknames)

    await wait_until(some_frames, timeout)
    await wait_until(more_frames, timeout)


async def wait_colour(page: Page, nickname: str, rgb: RGB, timeout: float = TIMEOUT) -> None:
    """Wait until a participant's tile shows (roughly) ``rgb``."""

    async def shows() -> bool:
        return close_to(await average_colour(page, f"{tile(nickname)} video"), rgb)

    await wait_until(shows, timeout)


async def wait_visible(page: Page, selector: str, timeout: float = TIMEOUT) -> None:
    await page.wait_for_selector(selector, state="visible", timeout=timeout * 1000)


async def wait_hidden(page: Page, selector: str, timeout: float = TIMEOUT) -> None:
    await page.wait_for_selector(selector, state="hidden", timeout=timeout * 1000)


# Delays one kind of native request made by the page, as a slow server would.
DELAY_REQUESTS_JS = """
([event, ms]) => {
  const signaling = window.roomrelay.signaling;
  const request = signaling.request.bind(signaling);
  signaling.request = async (name, ...args) => {
    if (name === event) await new Promise((resolve) => setTimeout(resolve, ms));
    return request(name, ...args);
  };
}
"""

# Everything that overflows the window to the right: tiles, controls, the status pill.
OVERFLOW_JS = """
() => {
  const width = document.documentElement.clientWidth;
  const shown = ".tile:not([hidden]), .controls button:not([hidden]), #quality";
  const boxes = [...document.querySelectorAll(shown)]
    .map((element) => [element.id || element.dataset.nickname || element.className,
                       element.getBoundingClientRect()]);
  return boxes.filter(([, box]) => box.left < -1 || box.right > width + 1)
    .map(([name, box]) => `${name}: ${Math.round(box.left)}..${Math.round(box.right)} of ${width}`);
}
"""


async def delay_requests(page: Page, event: str, milliseconds: int) -> None:
    await page.evaluate(DELAY_REQUESTS_JS, [event, milliseconds])


async def overflowing(page: Page) -> list[str]:
    """What sticks out of the window on either side (empty when the call fits)."""
    return await page.evaluate(OVERFLOW_JS)


async def box(page: Page, selector: str) -> dict[str, float]:
    """The element's bounding box in CSS pixels."""
    found = await page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not displayed"
    return found


# Mean RGB of a PNG (base64), decoded by the browser itself.
PNG_COLOUR_JS = """
async (data) => {
  // Built from bytes, not fetched: the page's CSP (connect-src 'self') forbids data: fetches.
  const bytes = Uint8Array.from(atob(data), (char) => char.charCodeAt(0));
  const blob = new Blob([bytes], { type: "image/png" });
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(32, 24);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, 32, 24);
  const pixels = context.getImageData(0, 0, 32, 24).data;
  const sum = [0, 0, 0];
  for (let i = 0; i < pixels.length; i += 4) {
    sum[0] += pixels[i]; sum[1] += pixels[i + 1]; sum[2] += pixels[i + 2];
  }
  return sum.map((value) => Math.round(value / (pixels.length / 4)));
}
"""


async def screenshot_colour(page: Page, selector: str) -> list[int]:
    """Mean RGB of what the screen shows in ``selector``'s box (a screenshot, not the video)."""
    png = await page.locator(selector).screenshot()
    return await page.evaluate(PNG_COLOUR_JS, base64.b64encode(png).decode())


# Records every reaction that appears on a tile: window.reactionsSeen = [[nickname, emoji]].
RECORD_REACTIONS_JS = """
() => {
  window.reactionsSeen = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (node.classList?.contains("reaction")) {
          window.reactionsSeen.push([node.closest(".tile").dataset.nickname, node.textContent]);
        }
      }
    }
  }).observe(document.querySelector("#grid"), { childList: true, subtree: true });
}
"""


async def record_reactions(page: Page) -> None:
    await page.evaluate(RECORD_REACTIONS_JS)


async def reactions_seen(page: Page) -> list[list[str]]:
    return await page.evaluate("() => window.reactionsSeen")

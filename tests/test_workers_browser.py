"""zoom-clone pages on media workers: a killed worker's room moves, the pages offer again."""

from __future__ import annotations

import os
import signal

import pytest
from playwright.async_api import async_playwright

from tests.support.browser import frames_decoded, launch_with_identity, wait_until
from tests.support.server import ServerProcess
from tests.support.zoomclone import ZOOMCLONE, open_zoomclone
from tests.test_zoomclone_browser_relay import BLUE, RED, decoding, shows

pytestmark = pytest.mark.browser


@pytest.fixture
def zoomclone_workers_server():
    server = ServerProcess(
        args=(
            *("--media", "relay", "--workers", "2"),
            *("--public-dir", str(ZOOMCLONE / "public"), "--index", str(ZOOMCLONE / "home.html")),
        )
    ).start(timeout=60)
    yield server
    server.stop()


def room_on_worker(server: ServerProcess, name: str) -> dict:
    stats = server.get_json("/stats")["media"]
    return next(w for w in stats["workers"] if name in w["rooms"])


async def test_pages_get_media_again_after_their_worker_is_killed(
    zoomclone_workers_server, room, tmp_path
):
    server = zoomclone_workers_server
    name = room("pair")
    async with async_playwright() as playwright:
        red = await launch_with_identity(playwright, tmp_path, "red", RED, 440)
        blue = await launch_with_identity(playwright, tmp_path, "blue", BLUE, 660)
        try:
            red_page = await open_zoomclone(red, server.url, name)
            blue_page = await open_zoomclone(blue, server.url, name)
            for page in (red_page, blue_page):
                await decoding(page)
            await shows(red_page, BLUE)
            await shows(blue_page, RED)
            owner = room_on_worker(server, name)

            os.kill(owner["pid"], signal.SIGKILL)

            await wait_until(lambda: server.get_json("/stats")["media"]["moved_rooms"] == 1)

            async def connected_on_new_worker() -> bool:
                rooms = {r["name"]: r for r in server.get_json("/rooms")["rooms"]}
                peers = rooms[name]["media"]["peers"]
                return len(peers) == 2 and all(p["connection"] == "connected" for p in peers)

            await wait_until(connected_on_new_worker, timeout=30)
            assert room_on_worker(server, name)["pid"] != owner["pid"]
            for page in (red_page, blue_page):
                before = await frames_decoded(page, "myPeerConnection")
                await wait_until(lambda p=page, b=before: _more_frames(p, b), timeout=30)
            await shows(red_page, BLUE)
            await shows(blue_page, RED)
        finally:
            await red.close()
            await blue.close()


async def _more_frames(page, than: int) -> bool:
    return await frames_decoded(page, "myPeerConnection") > than + 30

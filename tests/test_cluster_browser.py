"""zoom-clone pages in headless Chromium on two nodes of a cluster (REDIS_URL): they see
each other through the room's node, and get media again when that node is killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.support.browser import frames_decoded, launch_with_identity, wait_until
from tests.support.clients import PythonClient
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.zoomclone import ZOOMCLONE, open_zoomclone
from tests.test_cluster import live_nodes, node_id, room_entry, stop_all
from tests.test_zoomclone_browser_relay import BLUE, RED, decoding, shows

pytestmark = pytest.mark.browser

PAGE_ARGS = ("--public-dir", str(ZOOMCLONE / "public"), "--index", str(ZOOMCLONE / "home.html"))


@pytest.fixture
def zoomclone_nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    redis = RedisServer(tmp_path).start()
    env = {"REDIS_URL": redis.url}
    nodes = [
        ServerProcess(args=("--media", "relay", "--media-timeout", "5", *PAGE_ARGS), env=env)
        for _ in range(3)
    ]
    try:
        yield [node.start() for node in nodes]
    finally:
        stop_all([node for node in nodes if node.process is not None])
        redis.stop()


async def test_pages_on_two_nodes_see_each_other_and_recover_from_a_node_kill(
    zoomclone_nodes, room, tmp_path
):
    nodes = zoomclone_nodes
    await wait_until(lambda: len(live_nodes(nodes[2])) == 3)
    name = room("pages")
    first = await PythonClient().connect(nodes[0].url)  # in first: node 0 runs the room
    async with async_playwright() as playwright:
        red = await launch_with_identity(playwright, tmp_path, "red", RED, 440)
        blue = await launch_with_identity(playwright, tmp_path, "blue", BLUE, 660)
        try:
            await first.call("join_room", {"room": name, "nickname": "first"})
            red_page = await open_zoomclone(red, nodes[1].url, name)
            blue_page = await open_zoomclone(blue, nodes[2].url, name)
            for page in (red_page, blue_page):
                await decoding(page)
            await shows(red_page, BLUE)
            await shows(blue_page, RED)
            killed = node_id(nodes[0])
            assert room_entry(nodes[1], name)["media"]["node"] == killed

            nodes[0].kill()

            async def moved() -> bool:
                entry = room_entry(nodes[1], name)
                return entry is not None and entry["media"]["node"] not in (None, killed)

            await wait_until(moved, timeout=20)
            for page in (red_page, blue_page):
                before = await frames_decoded(page, "myPeerConnection")
                await wait_until(lambda p=page, b=before: more_frames(p, b), timeout=30)
            await shows(red_page, BLUE)
            await shows(blue_page, RED)
        finally:
            await red.close()
            await blue.close()
            await first.close()


async def more_frames(page, than: int) -> bool:
    return await frames_decoded(page, "myPeerConnection") > than + 30

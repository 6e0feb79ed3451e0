"""Two Chromium pages of a zoom-clone-contract client call each other through --media p2p."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from tests.support.browser import (
    average_colour,
    close_to,
    frames_decoded,
    launch_with_identity,
    wait_until,
)
from tests.support.zoomclone import open_zoomclone, zoomclone_server

pytestmark = pytest.mark.browser
RED, BLUE = (220, 40, 40), (40, 70, 220)


@pytest.fixture(scope="module")
def zoomclone_p2p_server():
    server = zoomclone_server("p2p")
    yield server
    server.stop()


async def test_two_pages_call_each_other_and_see_each_others_camera(
    zoomclone_p2p_server, room, tmp_path
):
    name = room("call")
    async with async_playwright() as playwright:
        red = await launch_with_identity(playwright, tmp_path, "red", RED, 440)
        blue = await launch_with_identity(playwright, tmp_path, "blue", BLUE, 660)
        try:
            red_page = await open_zoomclone(red, zoomclone_p2p_server.url, name)
            await red_page.wait_for_timeout(300)
            blue_page = await open_zoomclone(blue, zoomclone_p2p_server.url, name)

            for page in (red_page, blue_page):
                await wait_until(
                    lambda page=page: page.evaluate(
                        "() => myPeerConnection.connectionState === 'connected'"
                    )
                )
                await wait_until(lambda page=page: frames_decoded(page, "myPeerConnection"))

            async def red_sees_blue():
                return close_to(await average_colour(red_page, "#peerFace"), BLUE)

            async def blue_sees_red():
                return close_to(await average_colour(blue_page, "#peerFace"), RED)

            await wait_until(red_sees_blue)
            await wait_until(blue_sees_red)
            first = await frames_decoded(red_page, "myPeerConnection")
            await red_page.wait_for_timeout(1000)
            assert await frames_decoded(red_page, "myPeerConnection") > first
        finally:
            await red.close()
            await blue.close()

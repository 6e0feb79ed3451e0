"""zoom-clone-contract pages in relay mode: the server is each page's peer."""

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
RED, GREEN, BLUE = (220, 40, 40), (40, 190, 60), (40, 70, 220)


@pytest.fixture(scope="module")
def zoomclone_relay_server():
    server = zoomclone_server("relay")
    yield server
    server.stop()


async def decoding(page):
    await wait_until(
        lambda: page.evaluate(
            "() => myPeerConnection && myPeerConnection.connectionState === 'connected'"
        )
    )
    first = await wait_until(lambda: frames_decoded(page, "myPeerConnection"))
    await wait_until(lambda: _more_frames(page, first))


async def _more_frames(page, than):
    return await frames_decoded(page, "myPeerConnection") > than


async def shows(page, colour):
    await wait_until(lambda: _shows(page, colour), timeout=30)


async def _shows(page, colour):
    return close_to(await average_colour(page, "#peerFace"), colour)


async def test_room_of_two_each_page_sees_the_other(zoomclone_relay_server, room, tmp_path):
    name = room("pair")
    async with async_playwright() as playwright:
        red = await launch_with_identity(playwright, tmp_path, "red", RED, 440)
        blue = await launch_with_identity(playwright, tmp_path, "blue", BLUE, 660)
        try:
            red_page = await open_zoomclone(red, zoomclone_relay_server.url, name)
            blue_page = await open_zoomclone(blue, zoomclone_relay_server.url, name)
            for page in (red_page, blue_page):
                await decoding(page)
            await shows(red_page, BLUE)
            await shows(blue_page, RED)
            media = {r["name"]: r for r in zoomclone_relay_server.get_json("/rooms")["rooms"]}
            assert all(p["connection"] == "connected" for p in media[name]["media"]["peers"])
            await chat_channel_messages_cross(red_page, blue_page)
        finally:
            await red.close()
            await blue.close()


async def chat_channel_messages_cross(sender, receiver):
    """Each page's data channel ends at the server, which passes messages on (checked)."""
    logged: list[str] = []
    receiver.on("console", lambda message: logged.append(message.text))
    channel_open = "() => chatChannel !== undefined && chatChannel.readyState === 'open'"
    await wait_until(lambda: sender.evaluate(channel_open))
    await sender.evaluate(
        """() => {
            window.errors = [];
            socket.on("error", (error) => window.errors.push(error));
            chatChannel.send("x".repeat(20000));  // over the 16 KiB limit: refused
            chatChannel.send("hello from red");
        }"""
    )

    async def delivered():
        return "hello from red" in logged

    await wait_until(delivered)
    errors = await wait_until(lambda: sender.evaluate("() => window.errors"))
    assert errors[0]["code"] == "too_large" and errors[0]["event"] == "datachannel"
    assert all(len(text) < 1000 for text in logged)


async def test_room_of_three_follows_the_active_speaker(zoomclone_relay_server, room, tmp_path):
    """Red and green are silent; blue speaks, so the other two end up watching blue."""
    name = room("trio")
    async with async_playwright() as playwright:
        browsers = {
            colour: await launch_with_identity(playwright, tmp_path, label, colour, 500, amplitude)
            for label, colour, amplitude in (("r", RED, 0), ("g", GREEN, 0), ("b", BLUE, 14000))
        }
        try:
            pages = {}
            for colour, browser in browsers.items():
                pages[colour] = await open_zoomclone(browser, zoomclone_relay_server.url, name)
                await pages[colour].wait_for_timeout(300)
            for page in pages.values():
                await decoding(page)
            await shows(pages[RED], BLUE)
            await shows(pages[GREEN], BLUE)
            await shows(pages[BLUE], RED)  # nobody else spoke: the earliest arrival
            rooms = {r["name"]: r for r in zoomclone_relay_server.get_json("/rooms")["rooms"]}
            speaker = rooms[name]["media"]["active_speaker"]
            blue_peer = rooms[name]["peers"][2]["peer_id"]
            assert speaker == blue_peer
        finally:
            for browser in browsers.values():
                await browser.close()

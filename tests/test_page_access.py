"""The bundled page on a token server: a link's ?token= joins, and names the participant."""

from __future__ import annotations

import pytest
from playwright.async_api import async_playwright

from tests.support.access import token
from tests.support.browser import launch_with_identity
from tests.support.page import join, open_lobby, wait_for_remotes, wait_visible

pytestmark = pytest.mark.browser


async def test_a_link_with_a_token_joins_under_the_tokens_name_and_survives_a_reload(
    token_server, room, tmp_path
):
    name = room()
    async with async_playwright() as playwright:
        first = await launch_with_identity(playwright, tmp_path, "a", (220, 40, 40), 300)
        second = await launch_with_identity(playwright, tmp_path, "b", (40, 190, 70), 450)
        try:
            ann = await open_lobby(
                first, f"{token_server.url}/?room={name}&token={token('ann', name, name='Ann')}"
            )
            await join(ann, name, "Mallory")  # the token's name wins
            bob = await open_lobby(
                second, f"{token_server.url}/?room={name}&token={token('bob', name, name='Bob')}"
            )
            await join(bob, name, "Bob")
            await wait_for_remotes(bob, ["Ann"])
            await wait_for_remotes(ann, ["Bob"])

            await ann.reload()  # the link now shows /?room= only: the tab kept the token
            await wait_visible(ann, "#call")
            await wait_for_remotes(bob, ["Ann"])

            stranger = await open_lobby(second, f"{token_server.url}/?room={name}")
            await stranger.fill("#room-input", name)
            await stranger.fill("#nickname-input", "Eve")
            await stranger.click("#join-button")
            await stranger.wait_for_function(
                "() => document.body.innerText.toLowerCase().includes('access token')"
            )
            assert await stranger.is_hidden("#call")
        finally:
            await first.close()
            await second.close()

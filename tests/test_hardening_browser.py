"""The bundled page under the hardened server: CSP, a CORS list and a Host list let it work."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.browser import launch
from tests.support.page import join, wait_decoding, wait_for_remotes

pytestmark = pytest.mark.browser

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


async def open_watched(browser: Browser, url: str, sockets: list[str]) -> Page:
    """A page that records CSP violations and the WebSockets it opens."""
    context = await browser.new_context()
    await context.add_init_script(RECORD_VIOLATIONS)
    page = await context.new_page()
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(url)
    return page


async def test_page_works_with_cors_list_csp_and_host_list(server_pool, room):
    server = server_pool.get(
        "--media", "relay",
        "--cors-origins", "https://app.example.com",
        "--allowed-hosts", "127.0.0.1",
    )  # fmt: skip
    name = room("csp")
    sockets: list[str] = []
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            ada = await open_watched(browser, server.url, sockets)
            grace = await open_watched(browser, server.url, sockets)
            await join(ada, name, "Ada")
            await join(grace, name, "Grace")
            await wait_for_remotes(ada, ["Grace"])
            await wait_for_remotes(grace, ["Ada"])
            await wait_decoding(ada, ["Grace"])
            await wait_decoding(grace, ["Ada"])
            # Socket.IO started on polling and upgraded to a WebSocket on both pages.
            assert sum("transport=websocket" in url for url in sockets) >= 2
            for page in (ada, grace):
                assert await page.evaluate("() => window.__cspViolations") == []
        finally:
            await browser.close()

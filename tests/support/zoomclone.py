"""The zoom-clone-contract test client (tests/zoomclone/), served by a real roomrelay."""

from __future__ import annotations

from playwright.async_api import Browser, Page

from tests.support.server import PROJECT_ROOT, ServerProcess

ZOOMCLONE = PROJECT_ROOT / "tests" / "zoomclone"


def zoomclone_server(media: str) -> ServerProcess:
    """A server mounting the client the way a zoom-clone user would (--public-dir, --index)."""
    return ServerProcess(
        args=(
            "--media",
            media,
            "--public-dir",
            str(ZOOMCLONE / "public"),
            "--index",
            str(ZOOMCLONE / "home.html"),
        )
    ).start()


async def open_zoomclone(browser: Browser, url: str, room_name: str) -> Page:
    """A new page that enters ``room_name`` through the client's welcome form."""
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await page.fill("#welcome input", room_name)
    await page.click("#welcome button")
    await page.wait_for_selector("#call:not([hidden])")
    return page

"""The bundled page (static/) in headless Chromium against a relay-mode server.

Each browser has its own fake camera colour and microphone tone, so a page can tell
whose video a tile shows.
"""

from __future__ import annotations

import wave

import pytest
from playwright.async_api import async_playwright

from tests.support.browser import (
    average_colour,
    close_to,
    frames_decoded,
    launch,
    wait_until,
    write_tone,
    write_y4m,
)
from tests.support.page import (
    PC,
    box,
    delay_requests,
    fill_and_join,
    inbound_audio_packets,
    join,
    open_and_join,
    open_lobby,
    overflowing,
    reactions_seen,
    record_reactions,
    remote_nicknames,
    screenshot_colour,
    tile,
    wait_colour,
    wait_decoding,
    wait_for_remotes,
    wait_hidden,
    wait_visible,
)
from tests.support.server import ServerProcess
from tests.support.tcp_proxy import LossyProxy
from tests.support.zoomclone import open_zoomclone, zoomclone_server

pytestmark = pytest.mark.browser

RED, GREEN, BLUE = (220, 40, 40), (40, 190, 70), (40, 70, 220)
DENY_MEDIA = ["--use-fake-ui-for-media-stream=deny"]  # the permission prompt answers "block"


@pytest.fixture
def relay(server_pool):
    return server_pool.get("--media", "relay")


@pytest.fixture
async def playwright():
    async with async_playwright() as running:
        yield running


@pytest.fixture
async def browsers(playwright, tmp_path):
    """``await browsers(n)``: n Chromiums, the i-th filming RED, GREEN, BLUE with its own tone."""
    opened = []

    async def open_browsers(count, colours=(RED, GREEN, BLUE), *, files=True, **options):
        new = []
        for index in range(count):
            if files:
                stem = tmp_path / f"device-{len(opened)}"
                options["video"] = write_y4m(stem.with_suffix(".y4m"), colours[index])
                options["audio"] = write_tone(stem.with_suffix(".wav"), 300 + 150 * index)
            browser = await launch(playwright, **options)
            opened.append(browser)
            new.append(browser)
        return new

    yield open_browsers
    for browser in opened:
        await browser.close()


async def test_three_pages_see_each_other_and_another_room_sees_none(relay, room, browsers):
    name, elsewhere = room("trio"), room("elsewhere")
    red, green, blue = await browsers(3)
    people = {"Ada": (red, RED), "Grace": (green, GREEN), "Linus": (blue, BLUE)}
    pages = {
        nickname: await open_and_join(browser, relay.url, name, nickname)
        for nickname, (browser, _) in people.items()
    }

    for nickname, page in pages.items():
        others = [other for other in people if other != nickname]
        await wait_for_remotes(page, others)
        await wait_decoding(page, others)
        for other in others:
            await wait_colour(page, other, people[other][1])
        assert await frames_decoded(page, PC) > 0
        assert await page.get_attribute(f"{tile(nickname)}", "data-self") is not None

    # The lobby lists the busy room; someone joining another room sees nobody from it.
    outsider = await open_lobby(red, relay.url)
    await wait_visible(outsider, f'#room-list button[data-room="{name}"]')
    assert "3 people" in await outsider.inner_text(f'#room-list button[data-room="{name}"]')
    await join(outsider, elsewhere, "Outsider")
    await outsider.wait_for_timeout(2000)  # room for a wrong tile to show up, if one would
    assert await remote_nicknames(outsider) == []
    assert await frames_decoded(outsider, PC) == 0
    for nickname, page in pages.items():
        assert "Outsider" not in await remote_nicknames(page), nickname


async def test_chat_media_state_and_leaving_reach_everyone(relay, room, browsers):
    name = room("chat")
    (browser,) = await browsers(1)
    ada, grace, linus = [
        await open_and_join(browser, relay.url, name, nickname)
        for nickname in ("Ada", "Grace", "Linus")
    ]
    for page, others in ((ada, ["Grace", "Linus"]), (grace, ["Ada", "Linus"])):
        await wait_for_remotes(page, others)

    # Chat: the closed panel counts unread messages; opening it shows author and time.
    await ada.click("#toggle-chat")
    await ada.fill("#chat-input", "hello from Ada")
    await ada.press("#chat-input", "Enter")
    await wait_visible(ada, "#chat-log li:has-text('hello from Ada')")
    for page in (grace, linus):
        await wait_visible(page, "#chat-unread")
        assert await page.inner_text("#chat-unread") == "1"
        await page.click("#toggle-chat")
        message = page.locator("#chat-log li", has_text="hello from Ada")
        await message.wait_for()
        assert "Ada" in await message.locator(".author").inner_text()
        assert await message.locator("time").get_attribute("datetime")
        await wait_hidden(page, "#chat-unread")

    # Mute with the keyboard shortcut, camera off with the button: both show on other tiles.
    await ada.click("#toggle-chat")  # close the panel, so the focus leaves the chat input
    await ada.keyboard.press("m")
    await ada.click("#toggle-cam")
    assert await ada.evaluate("() => window.roomrelay.media.track('audio').enabled") is False
    assert await ada.evaluate("() => window.roomrelay.media.track('video').enabled") is False
    for page in (grace, linus):
        await wait_visible(page, f"{tile('Ada')} .mic-off")
        await wait_visible(page, f"{tile('Ada')} .cam-off")
        await wait_visible(page, f"{tile('Ada')} .placeholder")
        assert await page.inner_text(f"{tile('Ada')} .avatar") == "AD"
    await ada.keyboard.press("m")
    for page in (grace, linus):
        await wait_hidden(page, f"{tile('Ada')} .mic-off")
        assert await page.is_visible(f"{tile('Ada')} .cam-off")

    # Leaving removes the tile everywhere, and takes Ada back to the lobby.
    await ada.click("#leave")
    await wait_visible(ada, "#lobby")
    for page, others in ((grace, ["Linus"]), (linus, ["Grace"])):
        await wait_for_remotes(page, others)
        await wait_visible(page, "#chat-log li.system:has-text('Ada left')")


async def test_reload_rejoins_the_room_from_the_link(relay, room, browsers):
    name = room("reload")
    red, green = await browsers(2)
    ada = await open_and_join(red, relay.url, name, "Ada")
    grace = await open_and_join(green, relay.url, name, "Grace")
    await wait_decoding(ada, ["Grace"])
    assert f"?room={name}" in grace.url

    await grace.reload()
    await wait_visible(grace, "#call")
    assert await grace.is_hidden("#lobby")
    assert await grace.inner_text("#call-room") == name
    await wait_for_remotes(grace, ["Ada"])
    await wait_decoding(grace, ["Ada"])
    await wait_colour(grace, "Ada", RED)
    # Ada sees the rejoined Grace once, on a new connection, with her video.
    await wait_for_remotes(ada, ["Grace"])
    await wait_decoding(ada, ["Grace"])
    await wait_colour(ada, "Grace", GREEN)

    # A link opened in a new tab shows the lobby with the room filled in, not an instant join.
    fresh = await open_lobby(red, f"{relay.url}/?room={name}")
    assert await fresh.input_value("#room-input") == name


async def test_denied_camera_and_microphone_join_as_a_viewer(relay, room, browsers):
    name = room("viewer")
    (denied,) = await browsers(1, extra_flags=DENY_MEDIA)
    (red,) = await browsers(1)

    viewer = await open_lobby(denied, relay.url)
    await wait_visible(viewer, "#media-problem")
    assert "blocked" in await viewer.inner_text("#media-problem-text")

    async def offers_viewer():
        return await viewer.inner_text("#join-button") == "Join as viewer"

    await wait_until(offers_viewer, 10)
    await join(viewer, name, "Viewer")  # alone, with nothing to send or receive yet

    ada = await open_and_join(red, relay.url, name, "Ada")
    await wait_for_remotes(viewer, ["Ada"])
    await wait_decoding(viewer, ["Ada"])
    await wait_colour(viewer, "Ada", RED)
    # Ada sees the viewer with microphone and camera off.
    await wait_for_remotes(ada, ["Viewer"])
    await wait_visible(ada, f"{tile('Viewer')} .mic-off")
    await wait_visible(ada, f"{tile('Viewer')} .cam-off")
    await wait_visible(ada, f"{tile('Viewer')} .placeholder")
    assert await viewer.is_disabled("#toggle-mic")
    assert await viewer.is_disabled("#toggle-cam")


async def test_recording_is_shown_to_everyone_in_the_room(server_pool, room, browsers, tmp_path):
    server = server_pool.get("--media", "relay", "--record-dir", str(tmp_path / "recordings"))
    name = room("recorded")
    (red,) = await browsers(1)
    (denied,) = await browsers(1, extra_flags=DENY_MEDIA)
    ada = await open_and_join(red, server.url, name, "Ada")
    await wait_visible(ada, "#recording-indicator")  # her own audio started the recording

    # A viewer sends no audio: only the join ack can tell it the room is being recorded.
    viewer = await open_and_join(denied, server.url, name, "Viewer")
    await wait_visible(viewer, "#recording-indicator")
    await viewer.click("#leave")
    await wait_visible(viewer, "#lobby")
    assert await viewer.get_attribute("#recording-indicator", "hidden") is not None


async def test_without_a_camera_joins_with_audio_only(relay, room, browsers):
    name = room("audio-only")
    (no_camera,) = await browsers(
        1, files=False, extra_flags=["--use-fake-device-for-media-stream=device-count=0"]
    )
    (red,) = await browsers(1)
    ada = await open_and_join(red, relay.url, name, "Ada")

    voice = await open_lobby(no_camera, relay.url)
    await wait_visible(voice, "#media-problem")
    assert "No camera" in await voice.inner_text("#media-problem-text")
    await fill_and_join(voice, name, "Voice")
    await wait_visible(voice, "#call")
    await wait_decoding(voice, ["Ada"])
    await wait_colour(voice, "Ada", RED)

    await wait_for_remotes(ada, ["Voice"])
    await wait_visible(ada, f"{tile('Voice')} .cam-off")
    assert await ada.is_hidden(f"{tile('Voice')} .mic-off")

    async def hears_voice():
        return await inbound_audio_packets(ada, "Voice") > 50

    await wait_until(hears_voice, 30)


async def test_a_full_room_is_explained_in_the_lobby(server_pool, room, browsers):
    server = server_pool.get("--media", "relay", "--max-peers-per-room", "2")
    name = room("full")
    (browser,) = await browsers(1)
    await open_and_join(browser, server.url, name, "Ada")
    await open_and_join(browser, server.url, name, "Grace")

    late = await open_lobby(browser, server.url)
    await fill_and_join(late, name, " ")
    await wait_visible(late, "#join-error")
    assert await late.inner_text("#join-error") == "Enter a name."
    assert await late.get_attribute("#nickname-input", "aria-invalid") == "true"
    await fill_and_join(late, name, "Linus")
    await wait_visible(late, "#join-error:has-text('full')")
    assert "full" in (await late.inner_text("#join-error")).lower()
    assert await late.is_hidden("#call")
    assert await late.is_visible("#lobby")


async def test_rejoins_by_itself_after_the_connection_drops(relay, room, browsers):
    name = room("drop")
    red, green = await browsers(2)
    ada = await open_and_join(red, relay.url, name, "Ada")
    grace = await open_and_join(green, relay.url, name, "Grace")
    await wait_decoding(grace, ["Ada"])
    await grace.evaluate("() => { window.oldPc = window.roomrelay.pc; }")

    # Cut the Socket.IO transport under the page: the server drops Grace from the room.
    await grace.evaluate("() => window.roomrelay.signaling.socket.io.engine.close()")

    async def new_connection():
        return await grace.evaluate(
            "() => window.roomrelay.pc !== null && window.roomrelay.pc !== window.oldPc"
        )

    await wait_until(new_connection, 30)
    await wait_for_remotes(grace, ["Ada"])
    await wait_decoding(grace, ["Ada"])
    await wait_colour(grace, "Ada", RED)
    await wait_for_remotes(ada, ["Grace"])
    await wait_decoding(ada, ["Grace"])
    await wait_hidden(grace, "#banner")


async def test_switching_camera_replaces_the_track_without_renegotiating(relay, room, browsers):
    name = room("switch")
    # Chromium's second fake camera imitates a depth sensor (no colour frames): use the third.
    (cameras,) = await browsers(
        1, files=False, extra_flags=["--use-fake-device-for-media-stream=device-count=3"]
    )
    (red,) = await browsers(1)
    ada = await open_and_join(cameras, relay.url, name, "Ada")
    grace = await open_and_join(red, relay.url, name, "Grace")
    await wait_decoding(grace, ["Ada"])
    await wait_decoding(ada, ["Grace"])
    sdp_before = await ada.evaluate(f"() => {PC}.localDescription.sdp")
    old_track = await ada.evaluate("() => window.roomrelay.media.track('video').id")

    await ada.click("#open-devices")
    labels = await ada.eval_on_selector_all(
        "#call-camera option", "(options) => options.map((o) => o.textContent)"
    )
    assert labels == ["fake_device_0", "fake_device_1", "fake_device_2"]
    assert await ada.input_value("#call-camera") == await ada.evaluate(
        "() => window.roomrelay.media.deviceId('video')"
    )
    await ada.select_option("#call-camera", label="fake_device_2")

    async def switched():
        return await ada.evaluate(
            """(old) => {
                const senders = window.roomrelay.pc.getSenders();
                const sender = senders.find((s) => s.track?.kind === "video");
                return sender && sender.track.id !== old && sender.track.readyState === "live";
            }""",
            old_track,
        )

    await wait_until(switched, 20)
    await ada.click("#devices-dialog button[type=submit]")
    await wait_decoding(grace, ["Ada"])
    assert await ada.evaluate(f"() => {PC}.localDescription.sdp") == sdp_before


async def test_restarts_media_when_the_server_closes_it(relay, room, browsers):
    name = room("media-closed")
    red, green = await browsers(2)
    ada = await open_and_join(red, relay.url, name, "Ada")
    grace = await open_and_join(green, relay.url, name, "Grace")
    await wait_decoding(grace, ["Ada"])

    # Grace's connection dies under the page; the server notices and sends media_closed.
    await grace.evaluate("() => { window.oldPc = window.roomrelay.pc; window.oldPc.close(); }")

    async def reconnected():
        return await grace.evaluate(
            "() => window.roomrelay.pc !== window.oldPc"
            " && window.roomrelay.pc?.connectionState === 'connected'"
        )

    await wait_until(reconnected, 30)
    await wait_decoding(grace, ["Ada"])
    await wait_colour(grace, "Ada", RED)
    await wait_decoding(ada, ["Grace"])
    await wait_colour(ada, "Grace", GREEN)
    assert await remote_nicknames(ada) == ["Grace"]


async def test_survives_a_server_restart(room, browsers):
    """Pages say the server is gone, refuse to join meanwhile, and rejoin once it is back."""
    name = room("restart")
    red, green = await browsers(2)
    server = ServerProcess(args=("--media", "relay")).start()
    pages = []
    try:
        ada = await open_and_join(red, server.url, name, "Ada")
        grace = await open_and_join(green, server.url, name, "Grace")
        waiting = await open_lobby(green, server.url)
        pages = [ada, grace, waiting]
        await wait_decoding(ada, ["Grace"])

        grace_before = await ada.get_attribute(tile("Grace"), "data-peer-id")

        server.kill()
        for page in (ada, grace):
            await wait_visible(page, "#banner")
            text = (await page.inner_text("#banner")).lower()
            assert "reconnecting" in text or "can't reach the server" in text, text
        await fill_and_join(waiting, name, "Linus")
        await wait_visible(waiting, '#join-error:has-text("Can\'t reach the server")')

        server = ServerProcess(args=("--media", "relay"), port=server.port).start()

        async def grace_rejoined():
            peer_id = await ada.get_attribute(tile("Grace"), "data-peer-id")
            return peer_id not in (None, grace_before)

        await wait_until(grace_rejoined, 30)  # a new connection, a new peer_id
        await wait_for_remotes(ada, ["Grace"])
        await wait_for_remotes(grace, ["Ada"])
        await wait_decoding(ada, ["Grace"])
        await wait_decoding(grace, ["Ada"])
        for page in (ada, grace, waiting):
            await wait_hidden(page, "#banner")
        await join(waiting, name, "Linus")
        await wait_for_remotes(waiting, ["Ada", "Grace"])
    finally:
        for page in pages:  # the server only stops promptly with no client connected
            await page.context.close()
        server.stop()


async def test_live_captions_show_under_the_video_and_the_transcript_downloads(
    server_pool, room, browsers, speak, tmp_path
):
    server = server_pool.get("--media", "relay", "--stt", "--stt-partials")
    name = room("captioned")
    speech = tmp_path / "speech.wav"
    with wave.open(str(speech), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(speak("one two three four five", rate=48000) + bytes(48000 * 2))
    (speaker,) = await browsers(
        1, files=False, video=write_y4m(tmp_path / "s.y4m", RED), audio=speech
    )
    (listener,) = await browsers(1, [GREEN])
    ada = await open_and_join(speaker, server.url, name, "Ada")
    grace = await open_and_join(listener, server.url, name, "Grace")
    await wait_visible(grace, "#toggle-captions")
    await grace.evaluate(
        """() => {
            // After each change: the most partial lines one speaker had showing.
            window.partialLines = [];
            new MutationObserver(() => {
                const speakers = [...document.querySelectorAll("#captions p.partial strong")]
                    .map((who) => who.textContent);
                const counts = speakers.map((who) => speakers.filter((w) => w === who).length);
                window.partialLines.push(Math.max(0, ...counts));
            }).observe(document.querySelector("#captions"), {childList: true, subtree: true});
        }"""
    )

    async def caption_from_ada():  # a final one
        if not await grace.is_visible("#captions"):
            return False
        finals = "#captions p:not(.partial)"
        text = " ".join(await grace.locator(finals).all_inner_texts())
        return "Ada:" in text and {"one", "two", "three", "four", "five"} & set(text.split())

    await wait_until(caption_from_ada, 45)

    async def partial_caption_seen():  # the fake microphone loops the speech
        return 1 in await grace.evaluate("() => window.partialLines")

    await wait_until(partial_caption_seen, 30)
    # One line per speaker, updated in place (Grace's fake microphone beeps, which the
    # recognizer may caption too).
    assert max(await grace.evaluate("() => window.partialLines")) == 1
    await grace.click("#toggle-captions")  # off: the captions go away, and stay away
    assert await grace.get_attribute("#toggle-captions", "aria-pressed") == "false"
    assert await grace.is_hidden("#captions")
    await grace.click("#toggle-captions")
    assert await grace.get_attribute("#toggle-captions", "aria-pressed") == "true"

    href = await grace.get_attribute("#download-transcript", "href")
    transcript = await grace.evaluate("async (url) => (await fetch(url)).text()", href)
    assert "Ada: " in transcript
    await ada.close()


# -- defects found by trying the page next to Meet and Jitsi (issue 15) ----------------------


async def test_chat_keeps_what_is_typed_while_a_message_is_sent(relay, room, browsers):
    name = room("chat-typing")
    (browser,) = await browsers(1)
    ada = await open_and_join(browser, relay.url, name, "Ada")
    grace = await open_and_join(browser, relay.url, name, "Grace")
    await wait_for_remotes(ada, ["Grace"])
    await delay_requests(ada, "chat_message", 1500)  # a slow server: typing goes on meanwhile

    await ada.click("#toggle-chat")
    await ada.keyboard.type("first message")
    await ada.keyboard.press("Enter")
    await ada.keyboard.type("second message")
    await ada.keyboard.press("Enter")
    await ada.keyboard.type("third, still typing")

    await grace.click("#toggle-chat")

    async def both_arrived():
        texts = await grace.locator("#chat-log li:not(.system) .text").all_inner_texts()
        return texts if len(texts) >= 2 else None

    assert await wait_until(both_arrived, 20) == ["first message", "second message"]
    assert await ada.input_value("#chat-input") == "third, still typing"
    own = ada.locator("#chat-log li.own:not(.pending) .text")

    async def both_confirmed():
        return await own.count() == 2

    await wait_until(both_confirmed, 20)
    assert await own.all_inner_texts() == ["first message", "second message"]


async def test_chat_over_4_kib_of_utf8_is_too_long(relay, room, browsers):
    name = room("chat-long")
    (browser,) = await browsers(1)
    ada = await open_and_join(browser, relay.url, name, "Ada")
    await ada.click("#toggle-chat")
    text = "日本語" * 500  # 1,500 characters, 4,500 bytes in UTF-8
    await ada.fill("#chat-input", text)
    await ada.press("#chat-input", "Enter")
    await wait_visible(ada, "#chat-problem")
    problem = (await ada.inner_text("#chat-problem")).lower()
    assert "message too long" in problem and "room" not in problem
    assert await ada.input_value("#chat-input") == text  # nothing lost
    assert await ada.locator("#chat-log li.own").count() == 0

    # Just under the limit goes through.
    await ada.fill("#chat-input", "日" * 1365)
    await ada.press("#chat-input", "Enter")
    await wait_hidden(ada, "#chat-problem")
    await wait_visible(ada, "#chat-log li.own:not(.pending)")


async def test_speaker_ring_comes_with_the_join_and_goes_with_the_microphone(
    relay, room, browsers, tmp_path
):
    name = room("ring")
    (talker,) = await browsers(1)
    silent = write_tone(tmp_path / "silence.wav", 440, amplitude=0)
    (quiet,) = await browsers(
        1, files=False, video=write_y4m(tmp_path / "g.y4m", GREEN), audio=silent
    )
    ada = await open_and_join(talker, relay.url, name, "Ada")
    await wait_visible(ada, ".tile[data-self][data-speaking]", timeout=30)  # she is talking

    # Grace joins while Ada talks: the join ack names the speaker, no event will follow.
    grace = await open_and_join(quiet, relay.url, name, "Grace")
    await wait_visible(grace, f"{tile('Ada')}[data-speaking]")
    await grace.click("#toggle-participants")
    await wait_visible(grace, "#participant-list li[data-speaking]:has-text('Ada')")

    await ada.click("#toggle-mic")  # muted: not speaking any more, wherever it is shown
    await wait_hidden(grace, f"{tile('Ada')}[data-speaking]")
    await wait_hidden(grace, "#participant-list li[data-speaking]")
    await wait_hidden(ada, ".tile[data-self][data-speaking]")


async def test_the_call_fits_the_window_after_narrowing_it(relay, room, browsers):
    name = room("narrow")
    (browser,) = await browsers(1)
    ada = await open_lobby(browser, relay.url, viewport={"width": 1280, "height": 800})
    await join(ada, name, "Ada")
    grace = await open_and_join(browser, relay.url, name, "Grace")
    linus = await open_and_join(browser, relay.url, name, "Linus")
    await wait_for_remotes(ada, ["Grace", "Linus"])
    assert await overflowing(ada) == []

    await ada.set_viewport_size({"width": 390, "height": 844})

    async def fits():
        return await overflowing(ada) == []

    await wait_until(fits, 10)
    assert await ada.evaluate("() => document.documentElement.scrollWidth") <= 390
    await wait_visible(ada, "#leave")

    # A call of two, narrowed from a wide window to 600 px.
    await linus.close()
    await wait_for_remotes(ada, ["Grace"])
    await ada.set_viewport_size({"width": 1280, "height": 800})
    await wait_until(fits, 10)
    await ada.set_viewport_size({"width": 600, "height": 800})

    async def grace_fills_the_stage():  # once the grid has laid itself out again
        return await fits() and (await box(ada, tile("Grace")))["width"] > 400

    await wait_until(grace_fills_the_stage, 10)
    await grace.close()


async def test_escape_closes_the_people_panel_wherever_the_focus_is(relay, room, browsers):
    name = room("escape")
    (browser,) = await browsers(1)
    ada = await open_and_join(browser, relay.url, name, "Ada")
    await ada.click("#toggle-participants")  # the focus stays on the button, outside the panel
    await wait_visible(ada, "#participants-panel")
    await ada.keyboard.press("Escape")
    await wait_hidden(ada, "#side-panel")
    assert await ada.get_attribute("#toggle-participants", "aria-expanded") == "false"

    await ada.keyboard.press("p")
    await wait_visible(ada, "#participants-panel")
    await ada.click("#grid")  # focus nowhere in particular
    await ada.keyboard.press("Escape")
    await wait_hidden(ada, "#side-panel")


# The devices are busy in another app while the page opens them, until window.devicesFree.
BUSY_DEVICES_JS = """
(() => {
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    if (!window.devicesFree) throw new DOMException("Could not start source", "NotReadableError");
    return getUserMedia(constraints);
  };
})();
"""

# This computer has no camera and no microphone at all.
NO_DEVICES_JS = """
(() => {
  navigator.mediaDevices.getUserMedia = async () => {
    throw new DOMException("Requested device not found", "NotFoundError");
  };
  navigator.mediaDevices.enumerateDevices = async () => [];
})();
"""


async def test_a_viewer_turns_camera_and_microphone_on_in_the_call(relay, room, browsers):
    name = room("late-devices")
    red, green = await browsers(2)
    ada = await open_and_join(green, relay.url, name, "Ada")
    context = await red.new_context()
    await context.add_init_script(BUSY_DEVICES_JS)
    viewer = await context.new_page()
    await viewer.goto(relay.url)
    await wait_visible(viewer, "#media-problem")
    assert "busy" in await viewer.inner_text("#media-problem-text")
    await join(viewer, name, "Grace")
    await wait_decoding(viewer, ["Ada"])
    await wait_visible(ada, f"{tile('Grace')} .cam-off")

    # The other app lets go of the devices: the call's own buttons turn them on.
    await viewer.evaluate("() => { window.devicesFree = true; }")
    assert await viewer.is_enabled("#toggle-cam")
    await viewer.click("#toggle-cam")
    await wait_hidden(ada, f"{tile('Grace')} .cam-off")
    await wait_decoding(ada, ["Grace"])
    await wait_colour(ada, "Grace", RED)
    await viewer.click("#toggle-mic")
    await wait_hidden(ada, f"{tile('Grace')} .mic-off")

    async def hears_grace():
        return await inbound_audio_packets(ada, "Grace") > 50

    await wait_until(hears_grace, 30)
    assert await inner_label(viewer, "#toggle-cam") == "Stop video"
    assert await inner_label(viewer, "#toggle-mic") == "Mute"


async def inner_label(page, selector):
    return await page.inner_text(f"{selector} .control-label")


async def test_leaving_turns_the_camera_off(relay, room, browsers):
    name = room("release")
    (browser,) = await browsers(1)
    ada = await open_and_join(browser, relay.url, name, "Ada")
    await ada.evaluate("() => { window.callTracks = window.roomrelay.media.stream.getTracks(); }")
    await ada.click("#leave")
    await wait_visible(ada, "#lobby")
    states = await ada.evaluate("() => window.callTracks.map((track) => track.readyState)")
    assert states == ["ended", "ended"]
    await wait_visible(ada, "#media-released")

    # Joining again turns them back on.
    grace = await open_and_join(browser, relay.url, name, "Grace")
    await join(ada, name, "Ada")
    await wait_decoding(grace, ["Ada"])


async def test_a_reconnection_does_not_fill_the_chat(relay, room, browsers):
    name = room("flaky")
    red, green = await browsers(2)
    ada = await open_and_join(red, relay.url, name, "Ada")
    grace = await open_and_join(green, relay.url, name, "Grace")
    await wait_for_remotes(ada, ["Grace"])
    before = await ada.get_attribute(tile("Grace"), "data-peer-id")
    notes = ada.locator("#chat-log li.system")
    assert await notes.all_inner_texts() == ["Grace joined"]

    for _ in range(2):
        await grace.evaluate("() => window.roomrelay.signaling.socket.io.engine.close()")
        before = await wait_until(lambda old=before: rejoined(ada, "Grace", old), 30)
    await ada.wait_for_timeout(1000)
    assert await notes.all_inner_texts() == ["Grace joined"]

    # Leaving for good is still said.
    await grace.click("#leave")
    await notes.filter(has_text="Grace left").wait_for(state="attached")


async def test_a_lost_network_takes_the_same_place_back(server_pool, room, browsers):
    """Offline long enough for the server to notice, then back: nobody sees Grace leave."""
    server = server_pool.get("--media", "relay", "--ping-interval", "1", "--ping-timeout", "2")
    network = await LossyProxy(server.port).start()  # Grace's signaling goes through it
    name = room("tunnel")
    red, green = await browsers(2)
    ada = await open_and_join(red, server.url, name, "Ada")
    await open_and_join(green, network.url, name, "Grace")
    await wait_decoding(ada, ["Grace"])
    before = await ada.get_attribute(tile("Grace"), "data-peer-id")

    network.lose()
    await wait_until(lambda: server.get_json("/stats")["resumptions"]["held"] == 1, 30)
    network.restore()
    await wait_until(lambda: server.get_json("/stats")["resumptions"]["resumed"] == 1, 30)
    await wait_decoding(ada, ["Grace"])
    await wait_colour(ada, "Grace", GREEN)
    assert await ada.get_attribute(tile("Grace"), "data-peer-id") == before
    notes = await ada.locator("#chat-log li.system").all_inner_texts()
    assert notes == ["Grace joined"]  # no "Grace left", no second "joined"
    await network.close()


async def rejoined(page, nickname, old_peer_id):
    """The participant's new peer_id once their tile shows one other than ``old_peer_id``."""
    peer_id = await page.get_attribute(tile(nickname), "data-peer-id")
    return peer_id not in (None, old_peer_id) and peer_id


async def test_similar_names_get_their_own_colours_and_letter_initials(relay, room, browsers):
    name = room("colours")
    (browser,) = await browsers(1)
    nicknames = ["Sam 1", "Sam 2", "Sam 3", "<Olga>"]
    pages = [await open_and_join(browser, relay.url, name, nickname) for nickname in nicknames]
    first = pages[0]
    await wait_for_remotes(first, nicknames[1:])
    hues = {
        nickname: float(
            await first.evaluate(
                "(n) => document.querySelector(`.tile[data-nickname='${n}']`)"
                ".style.getPropertyValue('--hue')",
                nickname,
            )
        )
        for nickname in nicknames
    }
    for one in nicknames:
        for other in nicknames:
            if one < other:
                distance = abs(hues[one] - hues[other]) % 360
                assert min(distance, 360 - distance) >= 20, (one, other, hues)
    assert await first.inner_text(f"{tile('<Olga>')} .avatar") == "OL"
    assert await first.inner_text(f"{tile('Sam 2')} .avatar") == "SA"  # digits are no initials
    item = first.locator("#participant-list li", has_text="<Olga>")
    assert await item.locator(".avatar").text_content() == "OL"


async def test_no_devices_at_all_says_camera_or_microphone(relay, browsers):
    (browser,) = await browsers(1)
    context = await browser.new_context()
    await context.add_init_script(NO_DEVICES_JS)
    page = await context.new_page()
    await page.goto(relay.url)
    await wait_visible(page, "#media-problem")
    text = await page.inner_text("#media-problem-text")
    assert text.startswith("No camera or microphone was found."), text


async def test_self_view_is_a_movable_picture_in_picture_in_a_call_of_two(relay, room, browsers):
    name = room("pip")
    (browser,) = await browsers(1)
    viewport = {"width": 1280, "height": 800}
    ada = await open_lobby(browser, relay.url, viewport=viewport)
    await join(ada, name, "Ada")
    grace = await open_and_join(browser, relay.url, name, "Grace")
    await wait_for_remotes(ada, ["Grace"])
    stage = await box(ada, "#grid")
    await wait_visible(ada, ".tile[data-self][data-pip]")
    own, other = await box(ada, ".tile[data-self]"), await box(ada, tile("Grace"))
    assert own["width"] < stage["width"] * 0.3
    assert other["width"] > stage["width"] * 0.6
    assert own["x"] + own["width"] / 2 > stage["x"] + stage["width"] / 2  # bottom right
    assert own["y"] + own["height"] / 2 > stage["y"] + stage["height"] / 2

    # Dragged to the top left, it stays there.
    await ada.mouse.move(own["x"] + 20, own["y"] + 20)
    await ada.mouse.down()
    await ada.mouse.move(stage["x"] + 60, stage["y"] + 60, steps=8)
    await ada.mouse.up()
    await ada.wait_for_timeout(300)
    moved = await box(ada, ".tile[data-self]")
    assert moved["x"] < stage["x"] + stage["width"] / 2
    assert moved["y"] < stage["y"] + stage["height"] / 2
    assert await ada.evaluate("() => localStorage.getItem('roomrelay.pipCorner')") == "top-left"

    # A third person: everyone gets a tile, yours first.
    linus = await open_and_join(browser, relay.url, name, "Linus")
    await wait_for_remotes(ada, ["Grace", "Linus"])
    await wait_hidden(ada, ".tile[data-pip]")
    order = await ada.eval_on_selector_all(
        ".tile", "(tiles) => tiles.map((t) => t.dataset.nickname)"
    )
    assert order[0] == "Ada"
    sizes = {(await box(ada, f"{tile(n)}"))["width"] for n in ("Ada", "Grace", "Linus")}
    assert max(sizes) - min(sizes) < 2
    await linus.close()
    await grace.close()


# -- layouts, hands, reactions, quality and polish (issue 15) ---------------------------------


async def choose_in_settings(page, selector, *, check=True):
    await page.click("#open-devices")
    await page.set_checked(selector, check)
    await page.click("#devices-dialog button[type=submit]")


async def test_speaker_view_pin_full_screen_and_hidden_tiles_are_per_device(relay, room, browsers):
    name = room("layouts")
    red, green, blue = await browsers(3)
    viewport = {"width": 1280, "height": 800}
    ada = await open_lobby(red, relay.url, viewport=viewport)
    await join(ada, name, "Ada")
    grace = await open_and_join(green, relay.url, name, "Grace")
    await open_and_join(blue, relay.url, name, "Linus")
    await wait_decoding(ada, ["Grace", "Linus"])
    assert await ada.get_attribute("#grid", "data-layout") == "grid"

    # Speaker view: one large tile, the others in a strip below it.
    await choose_in_settings(ada, "#layout-speaker")
    await wait_visible(ada, "#grid[data-layout='speaker'] .tile[data-featured]")

    async def featured_large():  # once the grid has laid itself out for the new mode
        featured = await box(ada, ".tile[data-featured]")
        return featured if featured["width"] > (await box(ada, "#grid"))["width"] * 0.6 else None

    featured = await wait_until(featured_large, 10)
    for small in await ada.locator(".tile:not([data-featured])").all():
        strip = await small.bounding_box()
        assert strip["width"] < featured["width"] / 3
        assert strip["y"] > featured["y"] + featured["height"] - 2

    # Pin Linus: large for Ada, and only for her; the screen shows his blue.
    await ada.hover(tile("Linus"))
    await ada.click(f"{tile('Linus')} .pin-tile")
    await wait_visible(ada, f"{tile('Linus')}[data-featured][data-pinned]")
    assert await ada.get_attribute(f"{tile('Linus')} .pin-tile", "aria-pressed") == "true"

    async def shows_blue():
        return close_to(await screenshot_colour(ada, ".tile[data-featured]"), BLUE, 60)

    await wait_colour(ada, "Linus", BLUE)
    await wait_until(shows_blue, 30)
    assert await grace.get_attribute("#grid", "data-layout") == "grid"
    assert await grace.locator(".tile[data-pinned]").count() == 0

    # Full screen, and back.
    await ada.click(f"{tile('Linus')} .fullscreen-tile")
    await wait_until(lambda: ada.evaluate("() => document.fullscreenElement?.dataset.nickname"))
    assert await ada.evaluate("() => document.fullscreenElement.dataset.nickname") == "Linus"
    await ada.click(f"{tile('Linus')} .fullscreen-tile")
    await wait_until(lambda: ada.evaluate("() => document.fullscreenElement === null"))
    await ada.click(f"{tile('Linus')} .pin-tile")  # unpinned
    await wait_hidden(ada, ".tile[data-pinned]")

    # Hide tiles without video: Grace turns her camera off and leaves Ada's screen.
    await choose_in_settings(ada, "#hide-without-video")
    await grace.click("#toggle-cam")
    await wait_hidden(ada, tile("Grace"))
    assert await ada.is_visible(tile("Linus"))
    await grace.click("#toggle-cam")
    await wait_visible(ada, tile("Grace"))

    # Remembered on this device after a reload.
    await ada.reload()
    await wait_for_remotes(ada, ["Grace", "Linus"])
    await wait_visible(ada, "#grid[data-layout='speaker']")
    await ada.click("#open-devices")
    assert await ada.is_checked("#layout-speaker")
    assert await ada.is_checked("#hide-without-video")


async def test_hands_and_reactions_reach_every_page_in_order(relay, room, browsers):
    name = room("hands")
    (browser,) = await browsers(1)
    ada = await open_and_join(browser, relay.url, name, "Ada")
    grace = await open_and_join(browser, relay.url, name, "Grace")
    linus = await open_and_join(browser, relay.url, name, "Linus")
    everyone = {"Ada": ada, "Grace": grace, "Linus": linus}
    for nickname, page in everyone.items():
        await wait_for_remotes(page, [other for other in everyone if other != nickname])

    await grace.click("#raise-hand")
    await wait_visible(linus, f"{tile('Grace')} .hand-badge")
    await ada.keyboard.press("h")  # the shortcut
    await wait_visible(linus, f"{tile('Ada')} .hand-badge")
    assert await grace.get_attribute("#raise-hand", "aria-pressed") == "true"
    for page in (ada, grace, linus):
        await page.click("#toggle-participants")
        await wait_until(lambda page=page: hand_queue_is(page, ["Grace", "Ada"]), 20)

    # Grace lowers hers: Ada is first in line everywhere.
    await grace.click("#raise-hand")
    for page in (ada, grace, linus):
        await wait_hidden(page, f"{tile('Grace')} .hand-badge")
        await wait_visible(page, "#participant-list li[data-hand='1']:has-text('Ada')")

    # Reactions float over the sender's tile, in the order they were sent.
    for page in (grace, linus):
        await record_reactions(page)
    await ada.click("#open-reactions")
    await ada.click(".reaction-choice[data-emoji='👍']")
    await ada.click(".reaction-choice[data-emoji='🎉']")
    await wait_visible(ada, ".tile[data-self] .reaction")
    for page in (grace, linus):

        async def both(page=page):
            return len(await reactions_seen(page)) >= 2

        await wait_until(both, 20)
        assert await reactions_seen(page) == [["Ada", "👍"], ["Ada", "🎉"]]


async def hand_queue_is(page, expected):
    """The People panel lists raised hands first, in order; yourself as "Name (you)"."""
    names = await page.locator("#participant-list li[data-hand] .name").all_inner_texts()
    return [name.removesuffix(" (you)") for name in names] == expected


async def test_each_tile_shows_its_connection_quality(relay, room, browsers):
    name = room("tile-quality")
    (browser,) = await browsers(1)
    ada = await open_and_join(browser, relay.url, name, "Ada")
    await open_and_join(browser, relay.url, name, "Grace")
    await wait_decoding(ada, ["Grace"])
    indicator = f"{tile('Grace')} .tile-quality"
    await wait_visible(ada, indicator)

    async def measured():
        label = await ada.get_attribute(indicator, "aria-label") or ""
        uplink = "Their uplink to the server: packet loss" in label  # the `quality` event
        return "Packet loss" in label and "fps" in label and uplink and label

    label = await wait_until(measured, 20)
    assert label.startswith("Connection to Grace: ")
    assert await ada.get_attribute(indicator, "data-level") in ("good", "fair", "poor")
    details = f"{indicator} .tile-quality-details"
    assert (
        await ada.evaluate("(s) => getComputedStyle(document.querySelector(s)).visibility", details)
        == "hidden"
    )
    await ada.focus(indicator)
    await ada.keyboard.press("Shift+Tab")
    await ada.keyboard.press("Tab")  # keyboard focus shows the details
    assert "fps" in await ada.inner_text(details)
    assert (
        await ada.evaluate("(s) => getComputedStyle(document.querySelector(s)).visibility", details)
        == "visible"
    )


async def test_alone_state_unread_title_links_chime_and_muted_hint(relay, room, browsers):
    name = room("polish")
    (browser,) = await browsers(1)  # its fake microphone plays a steady tone: "talking"
    lobby = await open_lobby(browser, relay.url)

    async def level_shown(page=lobby, meter="#lobby-mic-level"):
        return await page.evaluate("(s) => document.querySelector(s).value", meter) > 0.1

    await wait_until(level_shown, 20)
    await join(lobby, name, "Ada")
    ada = lobby
    await wait_visible(ada, "#alone")
    assert "share the link" in (await ada.inner_text("#alone")).lower()

    grace = await open_and_join(browser, relay.url, name, "Grace")
    await wait_hidden(ada, "#alone")
    assert await ada.evaluate("() => window.roomrelay.call.chime.played") == 1

    # A message while Ada's chat is closed: counted on the tab; its address is a safe link.
    await grace.click("#toggle-chat")
    text = "look <img src=x onerror=window.pwned=1> at https://example.org/a?b=1."
    await grace.fill("#chat-input", text)
    await grace.press("#chat-input", "Enter")

    async def title_counts():
        return await ada.title() == f"(1) {name} · roomrelay"

    await wait_until(title_counts, 20)
    await ada.click("#toggle-chat")
    assert await ada.title() == f"{name} · roomrelay"
    link = ada.locator("#chat-log a")
    assert await link.get_attribute("href") == "https://example.org/a?b=1"
    assert await link.inner_text() == "https://example.org/a?b=1"
    assert await link.get_attribute("rel") == "noopener noreferrer"
    assert await ada.locator("#chat-log img").count() == 0
    assert await ada.evaluate("() => window.pwned") is None
    assert text in await ada.inner_text("#chat-log li:not(.system) .text")

    # Muted while talking: a hint says so, until unmuted.
    await ada.click("#toggle-chat")
    await ada.keyboard.press("m")
    await wait_visible(ada, "#muted-hint")
    await ada.keyboard.press("m")
    await wait_hidden(ada, "#muted-hint")

    # The Settings dialog shows the level too, and turns the chime off (remembered).
    await ada.click("#open-devices")
    await wait_until(lambda: level_shown(ada, "#call-mic-level"), 20)
    await ada.set_checked("#chime-toggle", False)
    await ada.click("#devices-dialog button[type=submit]")
    await grace.click("#leave")
    await wait_visible(ada, "#alone")
    assert await ada.evaluate("() => window.roomrelay.call.chime.played") == 1
    assert await ada.evaluate("() => localStorage.getItem('roomrelay.chime')") == "off"


# A USB headset is plugged in once window.plugIn() runs.
HOT_PLUG_JS = """
(() => {
  const enumerate = navigator.mediaDevices.enumerateDevices.bind(navigator.mediaDevices);
  let plugged = false;
  navigator.mediaDevices.enumerateDevices = async () => {
    const devices = await enumerate();
    if (!plugged) return devices;
    const headset = { deviceId: "usb-headset", groupId: "usb", kind: "audioinput",
                      label: "USB headset", toJSON() { return this; } };
    return [...devices, headset];
  };
  window.plugIn = () => {
    plugged = true;
    navigator.mediaDevices.dispatchEvent(new Event("devicechange"));
  };
})();
"""


async def test_a_microphone_plugged_in_mid_call_shows_up(relay, room, browsers):
    name = room("hot-plug")
    (browser,) = await browsers(1)
    context = await browser.new_context()
    await context.add_init_script(HOT_PLUG_JS)
    ada = await context.new_page()
    await ada.goto(relay.url)
    await join(ada, name, "Ada")
    await ada.evaluate("() => window.plugIn()")
    await wait_visible(ada, "#toast:has-text('USB headset connected')")
    await ada.click("#open-devices")
    options = ada.locator("#call-microphone option")
    await options.filter(has_text="USB headset").wait_for(state="attached")


SCREEN_GREEN = (3, 142, 1)  # Chromium's fake screen (--auto-select-desktop-capture-source)
SHARE_SCREEN = ["--auto-select-desktop-capture-source=Entire screen"]


async def zoomclone_peer_shows(page, colour):
    return close_to(await average_colour(page, "#peerFace"), colour, 60)


async def test_a_shared_screen_is_large_for_everyone_and_reaches_zoomclone_pages(
    room, browsers, tmp_path
):
    name = room("present")
    server = zoomclone_server("relay")  # the bundled page stays at /static/index.html
    try:
        (presenter,) = await browsers(1, [RED], extra_flags=SHARE_SCREEN)
        silent = write_tone(tmp_path / "quiet.wav", 440, amplitude=0)
        blue = write_y4m(tmp_path / "blue.y4m", BLUE)
        (viewer,) = await browsers(1, files=False, video=blue, audio=silent)
        (old_client,) = await browsers(1, files=False, video=blue, audio=silent)
        page_url = f"{server.url}/static/index.html"
        ada = await open_lobby(presenter, page_url, viewport={"width": 1280, "height": 800})
        await join(ada, name, "Ada")
        grace = await open_lobby(viewer, page_url, viewport={"width": 1280, "height": 800})
        await join(grace, name, "Grace")
        zoom = await open_zoomclone(old_client, server.url, name)
        await wait_decoding(grace, ["Ada"])
        await wait_until(lambda: zoomclone_peer_shows(zoom, RED), 30)  # Ada talks

        await ada.click("#share-screen")
        await wait_visible(ada, "#presenting")
        assert await ada.get_attribute("#share-screen", "aria-pressed") == "true"
        screen = ".tile[data-screen][data-screen-of='Ada']"
        await wait_visible(grace, f"{screen}[data-featured]")
        shown, stage = await box(grace, screen), await box(grace, "#grid")
        assert shown["width"] > stage["width"] * 0.6
        await wait_colour(grace, "Ada", RED)  # her camera goes on, in the strip
        assert (await box(grace, tile("Ada")))["width"] < shown["width"] / 3

        async def grace_sees_the_screen():
            return close_to(await average_colour(grace, f"{screen} video"), SCREEN_GREEN, 60)

        await wait_until(grace_sees_the_screen, 45)
        await wait_until(lambda: zoomclone_peer_shows(zoom, SCREEN_GREEN), 45)

        # Stop: the screen goes away everywhere, and the zoom-clone page follows Ada again.
        await ada.click("#stop-presenting")
        await wait_hidden(ada, "#presenting")
        await grace.locator(screen).wait_for(state="detached", timeout=30_000)
        await wait_until(lambda: zoomclone_peer_shows(zoom, RED), 45)
        await wait_colour(grace, "Ada", RED)
        # Sharing again reuses the connection's screen m-line.
        await ada.click("#share-screen")
        await wait_until(grace_sees_the_screen, 45)
    finally:
        server.stop()


async def test_host_controls_appear_only_for_the_host_and_work(server_pool, room, browsers):
    server = server_pool.get("--media", "relay", "--first-is-host")
    name = room("hosted")
    red, green, blue = await browsers(3)
    ada = await open_and_join(red, server.url, name, "Ada")  # the first one in: the host
    grace = await open_and_join(green, server.url, name, "Grace")
    await wait_for_remotes(ada, ["Grace"])
    for page in (ada, grace):
        await page.click("#toggle-participants")
    mute = ada.get_by_role("button", name="Mute Grace")
    await mute.wait_for()
    assert await ada.is_visible("#lock-room")
    assert await grace.is_hidden("#lock-room")
    assert await grace.locator("#participant-list button[data-action]").count() == 0

    await mute.click()  # Grace's microphone goes off, for everyone
    await grace.locator("#toast", has_text="Ada turned off your microphone").wait_for()
    grace_item = ada.locator("#participant-list li", has_text="Grace")
    await grace_item.get_by_role("img", name="Microphone off").wait_for()

    await ada.click("#lock-room")
    await ada.locator("#lock-room[aria-pressed='true']").wait_for()
    late = await open_lobby(blue, server.url)
    await fill_and_join(late, name, "Linus")
    await late.locator("#join-error", has_text="locked by its host").wait_for()

    await ada.get_by_role("button", name="Remove Grace").click()
    await grace.locator("#join-error", has_text="Ada removed you").wait_for()
    assert await grace.is_visible("#lobby")
    await wait_until(lambda: remote_nicknames_are(ada, []), 15)


async def remote_nicknames_are(page, expected: list[str]) -> bool:
    return await remote_nicknames(page) == expected

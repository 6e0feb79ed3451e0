"""Chromium as a WHIP publisher, a /ws client and a WHEP viewer in one room (fetch + WebSocket)."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, async_playwright

from tests.support.browser import (
    average_colour,
    close_to,
    frames_decoded,
    launch_with_identity,
    wait_until,
)

pytestmark = pytest.mark.browser
RED, BLUE = (220, 40, 40), (40, 70, 220)

GATHERED_JS = """
window.gathered = (pc) => new Promise((resolve) => {
  if (pc.iceGatheringState === "complete") return resolve();
  pc.addEventListener("icegatheringstatechange", () => {
    if (pc.iceGatheringState === "complete") resolve();
  });
});
window.show = (stream) => {
  const video = document.createElement("video");
  video.id = "remote"; video.autoplay = true; video.muted = true; video.srcObject = stream;
  document.body.appendChild(video);
};
"""

WHIP_JS = """
async (room) => {
  const media = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pc = window.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await window.gathered(pc);
  const reply = await fetch(`/whip/${room}?nickname=browser-whip`, {
    method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp,
  });
  if (reply.status !== 201) return {status: reply.status, body: await reply.text()};
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
  return {status: reply.status, location: reply.headers.get("Location")};
}
"""

WHEP_JS = """
async (room) => {
  const pc = window.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  pc.addTransceiver("video", {direction: "recvonly"});
  const stream = new MediaStream();
  pc.ontrack = (event) => stream.addTrack(event.track);
  window.show(stream);
  await pc.setLocalDescription(await pc.createOffer());
  await window.gathered(pc);
  const reply = await fetch(`/whep/${room}`, {
    method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp,
  });
  if (reply.status !== 201) return {status: reply.status, body: await reply.text()};
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
  return {status: reply.status, location: reply.headers.get("Location")};
}
"""

# The FastAPI relay's React client, as its docs describe it: connect, join, offer once,
# trickle candidates (so the server's /ws ice_candidate path is used, unlike aiortc's).
WS_JS = """
async (room) => {
  const socket = window.socket = new WebSocket(`ws://${location.host}/ws`);
  window.messages = [];
  const next = (type) => new Promise((resolve) => {
    const check = () => {
      const found = window.messages.find((m) => m.type === type);
      if (found) resolve(found); else setTimeout(check, 50);
    };
    check();
  });
  socket.onmessage = async (event) => {
    const message = JSON.parse(event.data);
    window.messages.push(message);
    if (message.type === "answer") {
      await window.pc.setRemoteDescription({type: "answer", sdp: message.sdp});
    }
  };
  const me = await next("peer_id");
  socket.send(JSON.stringify({type: "join_room", room_name: room, nickname: "browser-ws"}));
  const joined = await next("room_joined");
  const media = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pc = window.pc = new RTCPeerConnection();
  const stream = new MediaStream();
  pc.ontrack = (event) => stream.addTrack(event.track);
  window.show(stream);
  pc.onicecandidate = (event) => socket.send(JSON.stringify({
    type: "ice_candidate", candidate: event.candidate ? event.candidate.toJSON() : null,
  }));
  for (const track of media.getTracks()) pc.addTrack(track, media);
  await pc.setLocalDescription(await pc.createOffer());
  socket.send(JSON.stringify({type: "offer", data: pc.localDescription}));
  return {peer_id: me.peer_id, peer_count: joined.peer_count};
}
"""


async def open_at(browser, url: str) -> Page:
    """A page on the server's origin (its /health JSON: same origin, no page CSP)."""
    page = await (await browser.new_context()).new_page()
    await page.goto(url + "/health")
    await page.evaluate(f"() => {{ {GATHERED_JS} }}")
    return page


async def shows(page: Page, colour) -> bool:
    return close_to(await average_colour(page, "#remote"), colour)


async def test_whip_ws_and_whep_from_chromium_share_a_room(relay_server, room, tmp_path):
    name = room("browsers")
    async with async_playwright() as playwright:
        red = await launch_with_identity(playwright, tmp_path, "red", RED, 440)
        blue = await launch_with_identity(playwright, tmp_path, "blue", BLUE, 660, amplitude=0)
        try:
            publisher = await open_at(red, relay_server.url)
            published = await publisher.evaluate(WHIP_JS, name)
            assert published["status"] == 201, published
            assert published["location"].startswith(f"/whip/{name}/")

            legacy = await open_at(blue, relay_server.url)
            joined = await legacy.evaluate(WS_JS, name)
            assert joined["peer_count"] == 2
            viewer = await open_at(blue, relay_server.url)
            watched = await viewer.evaluate(WHEP_JS, name)
            assert watched["status"] == 201, watched

            # The /ws page and the WHEP viewer show the loud WHIP publisher (red).
            for page in (legacy, viewer):
                await wait_until(lambda page=page: frames_decoded(page, "window.pc"), 30)
                await wait_until(lambda page=page: shows(page, RED), 30)
            assert not [
                m for m in await legacy.evaluate("() => window.messages") if m["type"] == "error"
            ]
            rooms = relay_server.get_json("/rooms")["rooms"]
            entry = next(r for r in rooms if r["name"] == name)
            assert sorted(p["dialect"] for p in entry["peers"]) == ["http", "http", "ws"]

            # DELETE from the page ends the publisher's session.
            status = await publisher.evaluate(
                "async (url) => (await fetch(url, {method: 'DELETE'})).status",
                published["location"],
            )
            assert status == 200
            rooms = relay_server.get_json("/rooms")["rooms"]
            entry = next(r for r in rooms if r["name"] == name)
            assert "browser-whip" not in entry["nicknames"]
        finally:
            await red.close()
            await blue.close()

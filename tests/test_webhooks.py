"""Webhooks from a running server to a local receiver that checks every signature."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys

import jwt
import pytest
from aiohttp import web

from server.client import RoomClient
from tests.support.access import KEY, SECRET, http_json, token
from tests.support.media import COLOURS, TONES, ColourTrack, ToneTrack
from tests.support.metrics import scrape, value
from tests.support.polling import eventually
from tests.support.server import PROJECT_ROOT, free_port


class Receiver:
    """An aiohttp endpoint that verifies signatures; it fails its first request on purpose."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict] = []
        self.attempts = 0
        self.bad_signatures = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        try:
            claims = jwt.decode(request.headers["Authorization"], SECRET, algorithms=["HS256"])
        except jwt.PyJWTError:
            self.bad_signatures += 1
            return web.Response(status=401)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        if claims["iss"] != KEY or claims["sha256"] != digest:
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.attempts == 1:
            return web.Response(status=503)  # the server must try again
        assert request.content_type == "application/webhook+json"
        self.events.append(json.loads(body))
        return web.Response(text="ok")

    def names(self) -> list[str]:
        return [event["event"] for event in self.events]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver():
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()


@pytest.mark.media
async def test_a_call_reaches_the_webhook_signed_in_order_with_a_retry(
    server_pool, receiver, room, tmp_path
):
    server = server_pool.get(
        "--media",
        "relay",
        "--api-key",
        KEY,
        "--webhook-url",
        receiver.url,
        "--record-dir",
        str(tmp_path),
        env={"API_SECRET": SECRET},
    )
    name = room()
    caller = RoomClient(server.url, token=token("ann", name, name="Ann"))
    try:
        await caller.connect()
        await caller.join(name, audio=ToneTrack(TONES[0]), video=ColourTrack(COLOURS[0]))
        await caller.wait_connected()
        await eventually(lambda: receiver.names().count("track_published") == 2, 20)
        ops = token("ops", "*", room_list=True)

        def recording() -> bool:
            rooms = http_json(server.url + "/rooms", ops)[1]["rooms"]
            return any(entry["recording"] for entry in rooms)

        await eventually(recording, 20)
    finally:
        await caller.close()
    await eventually(lambda: "recording_finished" in receiver.names(), 20)
    await eventually(lambda: "room_finished" in receiver.names(), 20)

    names = receiver.names()
    assert names[:2] == ["room_started", "participant_joined"]
    assert names.index("participant_left") < names.index("room_finished")
    assert receiver.bad_signatures == 0
    assert receiver.attempts == len(receiver.events) + 1  # the refused first one came again
    by_name = {event["event"]: event for event in receiver.events}
    joined = by_name["participant_joined"]
    assert joined["room"] == {"name": name}
    assert joined["participant"]["identity"] == "ann"
    assert joined["participant"]["nickname"] == "Ann"
    assert by_name["participant_left"]["reason"] == "disconnect"
    kinds = sorted(e["track"]["kind"] for e in receiver.events if e["event"] == "track_published")
    assert kinds == ["audio", "video"]
    recording = by_name["recording_finished"]["recording"]
    assert recording["file"].startswith(str(tmp_path)) and recording["duration_s"] > 0
    assert len({event["id"] for event in receiver.events}) == len(receiver.events)

    def webhook_report() -> dict:
        return http_json(server.url + "/stats", ops)[1]["webhooks"]

    await eventually(lambda: webhook_report()["delivered"] == len(receiver.events), 10)
    report = webhook_report()
    assert report["retried"] == 1
    assert (report["failed"], report["dropped"], report["queued"]) == (0, 0, 0)
    assert report["by_event"]["track_published"] == 2
    metrics = scrape(server.url + "/metrics")
    assert value(metrics, "roomrelay_webhook_deliveries_total", outcome="retried") == 1
    assert value(metrics, "roomrelay_webhook_events_total", event="participant_left") == 1
    assert value(metrics, "roomrelay_webhook_queue") == 0


def test_webhooks_need_a_key_to_sign_with():
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--webhook-url", "http://127.0.0.1:9/x"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2 and "needs an API key" in result.stderr

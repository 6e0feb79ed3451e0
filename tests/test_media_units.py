"""Unit tests for the pure parts of the server: slot planning, speaker detection, offer
validation, keyframe coalescing and the event gate. No server process, no network."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import pytest
import socketio
from aiortc import RTCPeerConnection

from server.events import EventRouter
from server.media.encoded import KeyframeRequests
from server.media.offer import parse_offer
from server.media.planning import plan_every_source, plan_follow_speaker
from server.media.speaker import SpeakerDetector
from server.media.types import CloseReason
from server.ratelimit import TokenBucket
from server.rooms import Participant, Roster
from server.stats import Stats
from server.validation import ProtocolError

# -- slot planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pub:
    peer_id: str
    kind: str
    mid: str = "0"
    source: str = "camera"

    @property
    def key(self) -> str:
        return f"{self.peer_id}:{self.mid}"


@dataclass(eq=False)
class FakeSlot:
    kind: str
    source: Pub | None = None


def test_every_source_keeps_current_assignments_and_counts_missing_slots():
    ada_audio, ada_video, bob_video = (
        Pub("ada", "audio"),
        Pub("ada", "video", "1"),
        Pub("bob", "video"),
    )
    kept = FakeSlot("video", bob_video)
    free_audio = FakeSlot("audio")
    plan, missing = plan_every_source([free_audio, kept], [ada_audio, ada_video, bob_video])
    assert plan[kept] is bob_video, "a slot keeps its source while it is published"
    assert plan[free_audio] is ada_audio
    assert missing == {"video": 1}, "ada's video found no free video slot"


def test_every_source_frees_slots_of_sources_that_are_gone():
    slot = FakeSlot("audio", Pub("gone", "audio"))
    plan, missing = plan_every_source([slot], [])
    assert plan == {slot: None} and not missing


def test_follow_speaker_puts_the_latest_speaker_first():
    audio, video = FakeSlot("audio"), FakeSlot("video")
    sources = [Pub(name, kind) for name in ("ada", "bob", "cy") for kind in ("audio", "video")]
    plan = plan_follow_speaker([audio, video], sources, ["bob", "ada", "cy"])
    assert plan[audio] == Pub("bob", "audio") and plan[video] == Pub("bob", "video")
    plan = plan_follow_speaker([audio, video], sources, ["cy", "bob"])
    assert plan[video] == Pub("cy", "video")


def test_follow_speaker_shows_a_shared_screen_first():
    video = FakeSlot("video")
    screen = Pub("cy", "video", "2", source="screen")
    plan = plan_follow_speaker([video], [Pub("ada", "video"), screen], ["ada", "cy"])
    assert plan[video] is screen


def test_follow_speaker_leaves_extra_slots_idle():
    slots = [FakeSlot("video"), FakeSlot("video")]
    plan = plan_follow_speaker(slots, [Pub("ada", "video")], [])
    assert list(plan.values()) == [Pub("ada", "video"), None]


# -- active speaker -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def speak(detector: SpeakerDetector, clock: Clock, loud: str, seconds: float) -> bool:
    """``loud`` talks (others silent) for ``seconds``; True if the dominant speaker changed."""
    changed = False
    for _ in range(int(seconds / 0.02)):
        clock.now += 0.02
        detector.level(loud, 10)
        for other in detector.order:
            if other != loud:
                detector.level(other, 127)
        changed |= detector.evaluate()
    return changed


def test_a_speaker_becomes_dominant_after_the_hold_and_silence_keeps_them():
    clock = Clock()
    detector = SpeakerDetector(clock=clock)
    for peer in ("ada", "bob"):
        detector.add(peer)
    assert not speak(detector, clock, "bob", 0.2), "shorter than the hold: no switch"
    assert speak(detector, clock, "bob", 0.6)
    assert detector.dominant == "bob" and detector.order[0] == "bob"
    clock.now += 10  # everyone silent for a long time
    assert not detector.evaluate() and detector.dominant == "bob"


def test_a_departed_speaker_is_forgotten():
    clock = Clock()
    detector = SpeakerDetector(clock=clock)
    detector.add("ada")
    speak(detector, clock, "ada", 1.0)
    detector.remove("ada")
    assert detector.dominant is None and detector.order == []


# -- offers ---------------------------------------------------------------------------------


async def browser_like_offer(*kinds: str) -> str:
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def test_a_bundled_offer_is_accepted_with_its_sections():
    offer = parse_offer(await browser_like_offer("audio", "video"), max_media_sections=8)
    assert [(s.kind, s.client_receives, s.client_sends) for s in offer.sections] == [
        ("audio", True, False),
        ("video", True, False),
    ]
    assert "video/VP8" in offer.sections[1].codecs


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda sdp: "not an sdp", "invalid_sdp"),
        (lambda sdp: sdp.split("m=")[0], "invalid_sdp"),  # no media sections
        (lambda sdp: sdp.replace("a=group:BUNDLE 0 1\r\n", ""), "unsupported_sdp"),
        (lambda sdp: sdp.replace("a=mid:1\r\n", "a=mid:0\r\n"), "invalid_sdp"),
        (lambda sdp: re.sub(r"m=video \d+", "m=video 0", sdp), "unsupported_sdp"),
        (
            lambda sdp: sdp.replace("VP8/90000", "AV1X/90000").replace("H264/90000", "AV1Y/90000"),
            "no_usable_codec",
        ),
    ],
)
async def test_offers_aiortc_could_only_half_apply_are_refused(mangle, code):
    sdp = mangle(await browser_like_offer("audio", "video"))
    with pytest.raises(ProtocolError) as refused:
        parse_offer(sdp, max_media_sections=8)
    assert refused.value.code == code


async def test_an_offer_with_too_many_sections_is_too_large():
    with pytest.raises(ProtocolError) as refused:
        parse_offer(await browser_like_offer("audio", "audio", "audio"), max_media_sections=2)
    assert refused.value.code == "too_large"


def test_only_connection_losses_ask_the_client_to_reconnect():
    assert {r for r in CloseReason if r.client_must_reconnect} == {
        CloseReason.CONNECTION_FAILED,
        CloseReason.CONNECTION_CLOSED,
        CloseReason.CONNECT_TIMEOUT,
        CloseReason.MOVED,  # the room's media worker was lost (server/workers)
    }


# -- keyframe requests ------------------------------------------------------------------------


async def test_keyframe_requests_are_coalesced_but_never_lost():
    sent = []

    async def send() -> None:
        sent.append(time.monotonic())

    requests = KeyframeRequests(send, interval=0.2)
    for _ in range(10):
        requests.request()
    await asyncio.sleep(0.05)
    assert len(sent) == 1
    requests.request()  # inside the quiet interval: deferred, not dropped
    await asyncio.sleep(0.3)
    assert len(sent) == 2 and sent[1] - sent[0] >= 0.19


# -- the event gate ---------------------------------------------------------------------------


class Gate:
    """An EventRouter on a python-socketio server that is never started; emits recorded."""

    def __init__(self, rate: float = 100, burst: int = 100) -> None:
        self.sio = socketio.AsyncServer(async_mode="aiohttp")
        self.emitted: list[tuple[str, object, str]] = []

        async def emit(event: str, data: object = None, to: str = "", **_: object) -> None:
            self.emitted.append((event, data, to))

        self.sio.emit = emit  # type: ignore[method-assign]
        self.stats = Stats()
        self.roster = Roster(self.sio, max_per_room=4)
        self.router = EventRouter(self.sio, self.roster, self.stats)
        self.participant = Participant(sid="sid-1", limiter=TokenBucket(rate, burst))
        self.roster.add(self.participant)

    async def call(self, event: str, *args: object) -> object:
        return await self.sio.handlers["/"][event]("sid-1", *args)


async def test_the_gate_turns_protocol_errors_into_an_error_event_and_a_refusing_ack():
    gate = Gate()

    @gate.router.on("thing")
    async def thing(participant: Participant, value: object) -> dict:
        if not isinstance(value, int):
            raise ProtocolError("bad_request", "value must be a number")
        return {"ok": True, "value": value}

    assert await gate.call("thing", 3) == {"ok": True, "value": 3}
    refused = await gate.call("thing", "x")
    payload = {"code": "bad_request", "message": "value must be a number", "event": "thing"}
    assert refused == {"ok": False, "error": payload}
    assert gate.emitted == [("error", payload, "sid-1")]
    assert gate.stats.errors_by_code == {"bad_request": 1}
    assert gate.stats.events_by_name == {"thing": 2}


async def test_the_gate_reports_a_flood_once_and_unexpected_failures_as_internal():
    gate = Gate(rate=0, burst=1)

    @gate.router.on("thing")
    async def thing(participant: Participant) -> None:
        raise RuntimeError("a bug")

    assert (await gate.call("thing"))["error"]["code"] == "internal_error"
    for _ in range(3):
        assert (await gate.call("thing"))["error"]["code"] == "rate_limited"
    assert [data["code"] for event, data, _ in gate.emitted] == ["internal_error", "rate_limited"]
    assert gate.stats.errors_by_code == {"internal_error": 1, "rate_limited": 3}


async def test_the_gate_refuses_unknown_events_and_ignores_unknown_connections():
    gate = Gate()
    refused = await gate.sio.handlers["/"]["*"]("no-such-event", "sid-1")
    assert refused["error"]["code"] == "unknown_event"
    assert await gate.sio.handlers["/"]["*"]("no-such-event", "sid-unknown") is None

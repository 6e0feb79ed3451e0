"""Races and transport edge cases: stale sessions, offers on closing connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.error
import urllib.request

import aioice
import pytest
from aioice import stun
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.sdp import candidate_from_sdp

from server.loop_health import LoopLag
from server.media import peer as peer_module
from server.media.aiortc_hooks import (
    AiortcInternalsChanged,
    check_aioice_internals,
    install_aiortc_hooks,
)
from server.media.latency import LatencyHistogram
from server.media.offer import parse_offer, stream_ids_by_mid
from server.media.peer import MediaPeer, PeerHooks
from server.media.publication import EncodedSubscription
from server.media.types import CloseReason, MediaConfig, SlotPolicy
from server.tasks import cancel_and_wait


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "text/plain;charset=UTF-8")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_poll_on_a_session_that_just_closed_is_a_bad_request_not_a_crash(p2p_server):
    status, opening = http("GET", f"{p2p_server.url}/socket.io/?EIO=4&transport=polling")
    assert status == 200
    sid = opening.split('"sid":"')[1].split('"')[0]
    session = f"{p2p_server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert http("POST", session, b"1")[0] == 200  # engine.io CLOSE: the session ends
    status, text = http("POST", session, b"40")  # a request that was already on its way
    assert status == 400, text
    assert p2p_server.get_json("/health")["status"] == "ok"


def test_stats_report_how_late_the_event_loop_runs(p2p_server):
    lag = p2p_server.get_json("/stats")["loop_lag"]
    assert lag["interval_ms"] == 100
    assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"] <= lag["worst_ms"]


def test_loop_lag_quantiles_and_stalls():
    lag = LoopLag(warn_after=0.5)
    for lateness in [0.001] * 98 + [0.2, 2.0]:
        lag.record(lateness)
    stats = lag.stats()
    assert stats["p50_ms"] == 1.0 and stats["p99_ms"] == 2000.0 and stats["max_ms"] == 2000.0
    assert stats["stalls"] == 1 and stats["samples"] == 100


@pytest.mark.media
async def test_slow_consent_answers_do_not_cost_the_call(
    relay_server, room, room_clients, monkeypatch
):
    """A client whose ICE answers take a second (a busy machine) keeps its connection.

    aioice alone drops it after six unanswered 0.5 s checks, about 30 s in; RFC 7675
    gives consent 30 s from the last answer, which retransmitted checks still get.
    """
    send_stun = aioice.ice.StunProtocol.send_stun

    def answer_late(protocol, message, addr):
        if message.message_class == stun.Class.RESPONSE:
            asyncio.get_running_loop().call_later(1.0, send_stun, protocol, message, addr)
        else:
            send_stun(protocol, message, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "send_stun", answer_late)
    name = room("consent")
    slow = await room_clients(relay_server, name, 0)
    await asyncio.sleep(45)  # past the six checks aioice allows
    assert slow.connection_state == "connected"
    assert not [e for e, _ in slow.events if e == "media_closed"]
    rooms = {r["name"]: r for r in relay_server.get_json("/rooms")["rooms"]}
    media = {p["peer_id"]: p for p in rooms[name]["media"]["peers"]}
    assert media[slow.peer_id]["connection"] == "connected"


def test_a_changed_aioice_consent_loop_fails_loudly(monkeypatch):
    def build_request(self, pair): ...

    monkeypatch.setattr(aioice.Connection, "build_request", build_request)
    with pytest.raises(AiortcInternalsChanged, match="build_request"):
        check_aioice_internals()


class Facts:
    """A MediaListener that records what the media core reports."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[str] = asyncio.Queue()
        self.errors: list[str] = []

    async def answer(self, peer_id, sdp):
        self.answers.put_nowait(sdp)

    async def error(self, peer_id, event, error):
        self.errors.append(error.code)
        self.answers.put_nowait("")

    async def slots_changed(self, peer_id, slots): ...

    async def renegotiation_needed(self, peer_id, wanted): ...

    async def media_closed(self, peer_id, reason): ...

    async def speaker_changed(self, room, peer_id): ...

    async def uplink_quality(self, room, reports): ...


async def noop() -> None: ...


def lone_peer(facts: Facts) -> MediaPeer:
    hooks = PeerHooks(
        assign_slots=lambda: None,
        changed=noop,
        publication_added=lambda publication: None,
        publication_removed=lambda publication: None,
        datachannel_opened=lambda channel: None,
        connection_closed=lambda: None,
    )
    return MediaPeer(
        "peer",
        "room",
        policy=SlotPolicy.EVERY_SOURCE,
        rate_gate=lambda: True,
        listener=facts,
        hooks=hooks,
        relay=MediaRelay(),
        config=MediaConfig(connect_timeout=10),
        ice_servers=[],
        latency=LatencyHistogram(),
    )


async def connection_settles(peer: MediaPeer, states: tuple[str, ...]) -> None:
    """Wait (up to 10 s) until the peer's connection is in one of ``states`` or gone."""
    for _ in range(200):
        if peer.pc is None or peer.pc.connectionState in states:
            return
        await asyncio.sleep(0.05)


async def offer_of(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


@pytest.mark.media
@pytest.mark.parametrize("yields", [0, 2, 6, 12, 24, 48])
async def test_an_offer_racing_the_close_of_its_connection_gets_an_answer_or_a_clear_error(yields):
    install_aiortc_hooks()
    facts = Facts()
    peer = lone_peer(facts)
    client = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        client.addTransceiver("audio", direction="recvonly")
        peer.submit_offer(parse_offer(await offer_of(client), max_media_sections=8))
        answer = await asyncio.wait_for(facts.answers.get(), 10)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await connection_settles(peer, ("connected",))
        client.addTransceiver("video", direction="recvonly")  # a re-offer, same ICE session
        peer.submit_offer(parse_offer(await offer_of(client), max_media_sections=8))
        for _ in range(yields):
            await asyncio.sleep(0)
        await peer.close_connection(CloseReason.CONNECTION_CLOSED)
        await asyncio.wait_for(facts.answers.get(), 15)
        assert set(facts.errors) <= {"connection_closed"}, facts.errors
    finally:
        await peer.close(CloseReason.LEFT)
        await client.close()


class HeldAnswers(Facts):
    """Facts whose answers wait for ``release``: the offer stays in the middle of being
    applied (its remote description set, its answer not yet out)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def answer(self, peer_id, sdp):
        await self.release.wait()
        await super().answer(peer_id, sdp)


@pytest.mark.media
async def test_end_of_candidates_never_overtakes_a_candidate_still_queued():
    """Candidates trickled before the offer is applied wait behind it. An end-of-candidates
    arriving once the remote description is set used to be applied at once, ahead of them:
    ICE then refused them and failed at once (seen in the cluster, where an offer and its
    candidates arrive together over Redis)."""
    install_aiortc_hooks()
    facts = HeldAnswers()
    peer = lone_peer(facts)
    client = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        client.addTransceiver("audio", direction="recvonly")
        lines = (await offer_of(client)).split("\r\n")
        gathered = [line[2:] for line in lines if line.startswith("a=candidate:")]
        trickle = [line for line in lines if not line.startswith("a=candidate:")]
        trickle = [line for line in trickle if line != "a=end-of-candidates"]
        assert gathered
        peer.submit_offer(parse_offer("\r\n".join(trickle), max_media_sections=8))
        for line in gathered:  # trickled before the offer is applied: queued
            candidate = candidate_from_sdp(line)
            candidate.sdpMid, candidate.sdpMLineIndex = "0", 0
            await peer.add_candidate(candidate)
        for _ in range(200):
            if peer.pc is not None and peer.pc.remoteDescription is not None:
                break
            await asyncio.sleep(0.01)
        await peer.add_candidate(None)  # the offer is still being applied

        facts.release.set()
        answer = await asyncio.wait_for(facts.answers.get(), 10)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await connection_settles(peer, ("connected", "failed", "closed"))
        assert peer.pc is not None and peer.pc.connectionState == "connected"
    finally:
        await peer.close(CloseReason.LEFT)
        await client.close()


class FakePublication:
    """Enough of a Publication for a slot to subscribe to it."""

    def __init__(self, peer_id: str) -> None:
        self.peer_id, self.key, self.kind = peer_id, f"{peer_id}:0", "audio"
        self.source = "microphone"
        self.forwardable, self.mime_type = True, "audio/opus"

    def request_keyframe(self) -> None: ...

    def subscribe_encoded(self, sink, on_ended=None):
        return EncodedSubscription(self, sink, on_ended)

    def _unsubscribe(self, subscription) -> None: ...


@pytest.mark.media
async def test_a_slot_filled_while_the_answer_is_made_is_renegotiated(monkeypatch):
    """The stream ids the answer announced are read from the answer itself.

    A publisher appearing between createAnswer and the bookkeeping after it (a
    reconnect race) used to be recorded as announced while the answer carried a
    random id, and the client never heard it should renegotiate.
    """
    install_aiortc_hooks()
    facts = Facts()
    peer = lone_peer(facts)
    set_local = RTCPeerConnection.setLocalDescription

    async def publisher_arrives_meanwhile(pc, description):
        for slot in peer.slots:
            if slot.source is None:
                slot.attach(FakePublication("late-publisher"))
        await set_local(pc, description)

    monkeypatch.setattr(RTCPeerConnection, "setLocalDescription", publisher_arrives_meanwhile)
    client = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        client.addTransceiver("audio", direction="recvonly")
        await set_local(client, await client.createOffer())
        peer.submit_offer(parse_offer(client.localDescription.sdp, max_media_sections=8))
        answer = await asyncio.wait_for(facts.answers.get(), 10)
        assert "late-publisher" not in answer
        assert peer.slots[0].source_peer == "late-publisher"
        assert peer.slots_wanted() == {"audio": 1, "video": 0}, "a renegotiation is due"
    finally:
        await peer.close(CloseReason.LEFT)
        await client.close()


def test_stream_ids_are_read_per_mid_from_a_description():
    sdp = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=msid:ada track-1\r\nm=video 9 X 96\r\na=mid:1\r\n"
    assert stream_ids_by_mid(sdp) == {"0": "ada"}


@pytest.mark.slow
async def test_an_overloaded_server_refuses_new_joins_but_keeps_its_calls(
    server_pool, connect, room
):
    server = server_pool.get("--media", "p2p", "--busy-lag", "0.3")
    name = room("busy")
    settled = await connect(server)
    newcomer = await connect(server)
    await settled.call("enter_room", name)
    for _ in range(8):  # the loop runs 50 ms in every 650: about 0.6 s late each time
        os.kill(server.process.pid, signal.SIGSTOP)
        await asyncio.sleep(0.6)
        os.kill(server.process.pid, signal.SIGCONT)
        await asyncio.sleep(0.05)
    refused = await newcomer.call("enter_room", name)
    assert refused and refused[0]["error"]["code"] == "server_busy"
    assert server.get_json("/stats")["errors_by_code"]["server_busy"] >= 1
    await asyncio.sleep(5.5)  # quiet again: the window forgets the stalls
    assert await newcomer.call("enter_room", name) == []
    await settled.wait_for("welcome")
    rooms = {r["name"]: r for r in server.get_json("/rooms")["rooms"]}
    assert rooms[name]["participants"] == 2, "the settled participant never left"


def test_loop_lag_counts_recent_stalls_by_time_not_by_number():
    lag = LoopLag()
    for second in range(100):  # a quiet minute and a half, ten samples a second
        for tenth in range(10):
            lag.record(0.001, now=second + tenth / 10)
    for second in (100, 101, 102):  # then a stalled loop: one very late sample a second
        lag.record(0.9, now=second)
    assert lag.recent_median(2.5, now=102.5) == 0.9
    assert lag.stats()["p50_ms"] == 1.0, "by number, the stalls hide among quiet samples"


async def slow_to_stop(stopped: asyncio.Event) -> None:
    """A task whose clean-up after a cancel takes a moment (closing a connection, say)."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)
        stopped.set()
        raise


async def test_stopping_a_task_never_swallows_the_stoppers_own_cancellation():
    """A peer's work queue stopping a publication's task while the peer was being closed used
    to swallow its own cancel, run on, and leave the participant in its room as a ghost."""
    stopped = asyncio.Event()
    inner = asyncio.create_task(slow_to_stop(stopped))
    await asyncio.sleep(0)
    carried_on: list[str] = []

    async def stopper() -> None:
        await cancel_and_wait(inner)
        carried_on.append("as if never cancelled")
        await asyncio.sleep(3600)

    outer = asyncio.create_task(stopper())
    await asyncio.sleep(0.01)  # the stopper now waits for the inner task's clean-up
    outer.cancel()
    await asyncio.wait([outer], timeout=2)
    assert outer.cancelled() and not carried_on
    await asyncio.wait_for(stopped.wait(), 2)
    assert inner.cancelled()


async def test_a_stopped_task_s_error_reaches_the_stopper():
    async def failing() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await cancel_and_wait(task)
    await cancel_and_wait(None)  # nothing to stop


@pytest.mark.media
async def test_a_leave_ends_even_when_the_peer_s_work_is_stuck(monkeypatch):
    """Whatever a peer's work queue is stuck in (work that ignores a cancel), closing the
    peer finishes, so that its participant leaves the room."""
    monkeypatch.setattr(peer_module, "WORK_STOP_TIMEOUT", 0.2)
    install_aiortc_hooks()
    peer = lone_peer(Facts())
    started, released = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    peer._queue.put_nowait(("stuck", stubborn))
    await asyncio.wait_for(started.wait(), 2)
    try:
        await asyncio.wait_for(peer.close(CloseReason.LEFT), 2)
        assert peer.closed
    finally:
        released.set()  # let the stubborn work end with the test

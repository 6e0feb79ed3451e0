"""The server's `quality` event: each publisher's uplink as the server receives it.

Real aiortc clients publish identity media (a colour, a tone) to a running
server; the figures they are told about must be the ones they send, for every
publisher of their room and for no one else's.
"""

from __future__ import annotations

import asyncio

import pytest

from server.client import RoomClient

pytestmark = pytest.mark.media

LEVELS = {"good", "fair", "poor"}


def quality_events(client: RoomClient) -> list[dict]:
    return [payload for event, payload in client.events if event == "quality"]


async def uplink_reports(client: RoomClient, peer_ids: set[str], timeout: float = 20) -> dict:
    """The latest `quality` reports ``client`` got, by peer_id, once they cover ``peer_ids``."""

    def latest() -> dict:
        reports: dict = {}
        for payload in quality_events(client):
            reports.update({report["peer_id"]: report for report in payload["peers"]})
        return reports

    deadline = asyncio.get_running_loop().time() + timeout
    while not peer_ids <= latest().keys():
        assert asyncio.get_running_loop().time() < deadline, f"no quality for {peer_ids}"
        await asyncio.sleep(0.2)
    return latest()


def assert_plausible_uplink(report: dict) -> None:
    """A ColourTrack (30 fps video) and a tone, sent over loopback."""
    assert report["level"] in LEVELS
    assert 0.0 <= report["loss"] <= 1.0
    assert report["kbps"] > 10, report
    assert report["fps"] is not None and report["fps"] > 5, report
    assert report["rtt_ms"] is None or report["rtt_ms"] >= 0


async def test_each_publisher_uplink_reaches_its_room_and_no_other(
    relay_server, room, room_clients
):
    name, elsewhere = room("q"), room("q-other")
    ann = await room_clients(relay_server, name, 0)
    bob = await room_clients(relay_server, name, 1)
    other = await room_clients(relay_server, elsewhere, 2)

    reports = await uplink_reports(ann, {ann.peer_id, bob.peer_id})
    for peer_id in (ann.peer_id, bob.peer_id):
        assert_plausible_uplink(reports[peer_id])
    assert other.peer_id not in reports

    theirs = await uplink_reports(other, {other.peer_id})
    assert theirs.keys() == {other.peer_id}
    assert_plausible_uplink(theirs[other.peer_id])


async def test_a_participant_that_sends_nothing_is_not_reported(relay_server, room, room_clients):
    name = room("q-viewer")
    talker = await room_clients(relay_server, name, 0)
    viewer = await room_clients(relay_server, name, 1, publish=False)

    await uplink_reports(viewer, {talker.peer_id})
    while len(quality_events(viewer)) < 2:  # a second round too
        await asyncio.sleep(0.2)
    events = quality_events(viewer)
    reported = {report["peer_id"] for payload in events for report in payload["peers"]}
    assert reported == {talker.peer_id}

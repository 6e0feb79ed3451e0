"""GET /metrics: Prometheus text from a running server, parsed with prometheus_client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from server.metrics import latency_histogram
from tests.support.metrics import scrape, value
from tests.support.polling import eventually
from tests.support.server import free_port


@pytest.fixture
def metrics_server(server_pool):
    """Relay mode with metrics on a port of their own (this module's server alone)."""
    port = free_port()
    server = server_pool.get(
        "--media", "relay", "--media-timeout", "5", "--metrics-port", str(port)
    )
    return server, f"http://127.0.0.1:{port}/metrics"


@pytest.mark.media
async def test_metrics_follow_a_real_call_and_counters_survive_its_end(
    metrics_server, room, room_clients, connect
):
    server, metrics_url = metrics_server
    name = room("metrics")
    alice = await room_clients(server, name, 0)
    bob = await room_clients(server, name, 1)
    await alice.wait_for_media([bob.peer_id])
    await bob.wait_for_media([alice.peer_id])
    stray = await connect(server)
    await stray.call("no_such_event")

    async def video_flowing():
        samples = scrape(metrics_url)
        return samples if value(samples, "roomrelay_keyframes_received_total") >= 2 else None

    during = await eventually(video_flowing)
    assert value(during, "roomrelay_rooms") == 1
    assert value(during, "roomrelay_participants") == 2
    assert value(during, "roomrelay_connections") == 3
    assert value(during, "roomrelay_connections_accepted_total") == 3
    assert value(during, "roomrelay_peer_connections") == 2
    assert value(during, "roomrelay_subscriptions") == 4
    assert value(during, "roomrelay_tracks_published", kind="audio") == 2
    assert value(during, "roomrelay_tracks_published", kind="video") == 2
    assert value(during, "roomrelay_events_total", event="join_room") == 2
    assert value(during, "roomrelay_events_total", event="offer") >= 2
    assert value(during, "roomrelay_errors_total", code="unknown_event") == 1
    assert value(during, "roomrelay_frames_received_total", kind="video") > 0
    assert value(during, "roomrelay_frames_received_total", kind="audio") > 0
    # Each subscriber's slot asks its publisher for a keyframe when it is attached.
    assert value(during, "roomrelay_keyframe_requests_total") >= 2
    assert value(during, "roomrelay_pli_total") >= 1
    assert value(during, "process_resident_memory_bytes") > 0

    await alice.close()
    await bob.close()

    def call_over():
        samples = scrape(metrics_url)
        gauges = ("roomrelay_peer_connections", "roomrelay_rooms", "roomrelay_participants")
        return samples if not any(value(samples, gauge) for gauge in gauges) else None

    after = await eventually(call_over)
    assert value(after, "roomrelay_connections") == 1
    assert value(after, "roomrelay_tracks_published", kind="video") == 0
    for counter in (
        "roomrelay_keyframes_received_total",
        "roomrelay_keyframe_requests_total",
        "roomrelay_pli_total",
    ):
        assert value(after, counter) >= value(during, counter), counter
    assert value(after, "roomrelay_frames_received_total", kind="video") >= value(
        during, "roomrelay_frames_received_total", kind="video"
    )


def test_metrics_on_their_own_port_are_not_on_the_main_one(metrics_server):
    server, _ = metrics_server
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "/metrics", timeout=5)
    assert refused.value.code == 404


async def test_metrics_on_the_main_port_count_chat_stage_events(p2p_server, connect, room):
    before = scrape(p2p_server.url + "/metrics")
    client = await connect(p2p_server)
    await client.call("enter_room", room())
    await client.call("nickname", 5)  # refused: bad_request

    after = scrape(p2p_server.url + "/metrics")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - before.get((name, tuple(sorted(labels.items()))), 0)

    assert grew("roomrelay_events_total", event="enter_room") == 1
    assert grew("roomrelay_events_total", event="nickname") == 1
    assert grew("roomrelay_errors_total", code="bad_request") == 1
    (build,) = [dict(labels) for name, labels in after if name == "roomrelay_build_info"]
    assert build["media"] == "p2p" and build["version"]
    assert value(after, "roomrelay_peer_connections") == 0


def test_forward_latency_snapshot_becomes_a_prometheus_histogram():
    family = latency_histogram(
        {"buckets": [[0.005, 3], [0.02, 7], [float("inf"), 8]], "sum": 0.09, "count": 8}
    )
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("roomrelay_forward_latency_seconds_bucket", "0.005")] == 3
    assert samples[("roomrelay_forward_latency_seconds_bucket", "0.02")] == 7
    assert samples[("roomrelay_forward_latency_seconds_bucket", "+Inf")] == 8
    assert samples[("roomrelay_forward_latency_seconds_count", None)] == 8
    assert samples[("roomrelay_forward_latency_seconds_sum", None)] == pytest.approx(0.09)

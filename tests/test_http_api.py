"""HTTP endpoints, CORS, the served Socket.IO client bundle and the zoom-clone page mounts."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from server.settings import load_settings
from tests.support.server import PROJECT_ROOT, ServerProcess

ORIGIN = "http://friend.example"


def fetch(url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_health_reports_status_version_and_uptime(p2p_server):
    health = p2p_server.get_json("/health")
    assert health["status"] == "ok"
    assert health["version"]
    assert health["uptime_s"] >= 0
    assert health["media"] == "p2p"
    assert health["socketio_client"].startswith("4.")


async def test_rooms_lists_counts_and_nicknames(p2p_server, connect, room):
    name = room()
    alice = await connect(p2p_server)
    bob = await connect(p2p_server)
    await alice.call("enter_room", name, "alice")
    await bob.call("enter_room", name, "bob")

    listed = {entry["name"]: entry for entry in p2p_server.get_json("/rooms")["rooms"]}

    assert listed[name]["participants"] == 2
    assert sorted(listed[name]["nicknames"]) == ["alice", "bob"]
    assert alice.sid not in listed and bob.sid not in listed


async def test_stats_counts_connections_events_and_errors(server_pool, connect, room):
    server = server_pool.get("--media", "p2p", "--log-level", "warning")
    before = server.get_json("/stats")
    client = await connect(server)
    await client.call("enter_room", room())
    await client.call("nickname", 5)

    after = server.get_json("/stats")

    assert after["connections"] == before["connections"] + 1
    assert after["connections_total"] == before["connections_total"] + 1
    assert after["events_total"] == before["events_total"] + 2
    assert after["errors_total"] == before["errors_total"] + 1
    assert after["errors_by_code"]["bad_request"] >= 1
    assert after["rooms"] == before["rooms"] + 1
    assert after["process"]["tasks"] > 0


def test_cors_is_same_origin_only_by_default(p2p_server):
    status, headers, _ = fetch(p2p_server.url + "/rooms", {"Origin": ORIGIN})
    assert status == 200
    assert "Access-Control-Allow-Origin" not in headers
    status, _, body = fetch(
        p2p_server.url + "/socket.io/?EIO=4&transport=polling", {"Origin": ORIGIN}
    )
    assert status == 400 and b"not an accepted origin" in body


def test_cors_origins_setting_drives_http_api_and_socketio(server_pool):
    server = server_pool.get("--media", "p2p", "--cors-origins", ORIGIN)
    _, headers, _ = fetch(server.url + "/stats", {"Origin": ORIGIN})
    assert headers.get("Access-Control-Allow-Origin") == ORIGIN
    _, headers, _ = fetch(server.url + "/stats", {"Origin": "http://stranger.example"})
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, _ = fetch(
        server.url + "/socket.io/?EIO=4&transport=polling", {"Origin": ORIGIN}
    )
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == ORIGIN
    status, _, _ = fetch(
        server.url + "/socket.io/?EIO=4&transport=polling",
        {"Origin": "http://stranger.example"},
    )
    assert status == 400


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/socket.io/socket.io.js", "application/javascript"),
        ("/socket.io/socket.io.min.js", "application/javascript"),
        ("/socket.io/socket.io.min.js.map", "application/json"),
        ("/socket.io/socket.io.js.map", "application/json"),
        ("/socket.io/socket.io.esm.min.js", "application/javascript"),
    ],
)
def test_client_bundle_is_served(p2p_server, path, content_type):
    status, headers, body = fetch(p2p_server.url + path)
    assert status == 200
    assert headers["Content-Type"].startswith(content_type)
    if path.endswith(".js"):
        assert b"Socket.IO v4." in body[:200]
    else:
        assert json.loads(body)["version"] == 3


def test_startup_fails_clearly_without_the_client_bundle(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", "--client-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "socket.io-client 4.x not found" in result.stderr
    assert "npm install" in result.stderr


def test_bundled_page_is_served_at_root(p2p_server):
    status, _, body = fetch(p2p_server.url + "/")
    assert status == 200 and b"<html" in body.lower()


def test_zoomclone_front_end_can_be_mounted(tmp_path):
    public = tmp_path / "public"
    (public / "js").mkdir(parents=True)
    (public / "js" / "app.js").write_text("const socket = io();\n")
    home = tmp_path / "home.html"
    home.write_text('<html><script src="/socket.io/socket.io.js"></script></html>')
    server = ServerProcess(
        args=("--media", "p2p", "--public-dir", str(public), "--index", str(home))
    ).start()
    try:
        status, _, body = fetch(server.url + "/")
        assert status == 200 and b"/socket.io/socket.io.js" in body
        status, _, body = fetch(server.url + "/public/js/app.js")
        assert status == 200 and body == b"const socket = io();\n"
        status, _, _ = fetch(server.url + "/public/../home.html")
        assert status in (403, 404)
    finally:
        server.stop()


def test_settings_come_from_flags_then_environment_then_defaults():
    environ = {"PORT": "9001", "MAX_PEERS_PER_ROOM": "3", "CORS_ORIGINS": "*", "MEDIA": "p2p"}
    settings = load_settings(["--port", "9002"], environ)
    assert settings.port == 9002
    assert settings.max_peers_per_room == 3
    assert settings.cors_origins == "*"
    assert settings.host == "0.0.0.0"
    defaults = load_settings([], {})
    assert (defaults.host, defaults.port) == ("0.0.0.0", 8000)


def test_bad_environment_values_are_reported(capsys):
    with pytest.raises(SystemExit):
        load_settings([], {"MAX_PEERS_PER_ROOM": "0"})
    assert "MAX_PEERS_PER_ROOM" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_settings([], {"MEDIA": "carrier-pigeon"})


def test_help_describes_every_setting_and_its_environment_variable():
    result = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = " ".join(result.stdout.split())  # argparse wraps lines anywhere
    for variable in (
        "HOST",
        "PORT",
        "LOG_LEVEL",
        "CORS_ORIGINS",
        "MAX_PEERS_PER_ROOM",
        "RATE_LIMIT",
        "MEDIA",
        "PUBLIC_DIR",
        "INDEX_FILE",
    ):
        assert f"env {variable}" in text

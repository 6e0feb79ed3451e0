"""HTTP endpoints, CORS, the served Socket.IO client bundle and the zoom-clone page mounts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from server.settings import load_settings
from tests.support.server import PROJECT_ROOT, ServerProcess, free_port

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


@pytest.mark.parametrize(
    ("name", "content_type", "starts"),
    [
        ("selfie_segmentation.js", "application/javascript", b""),
        ("selfie_segmentation_solution_simd_wasm_bin.wasm", "application/wasm", b"\0asm"),
        ("selfie_segmentation_landscape.tflite", "application/octet-stream", b""),
    ],
)
def test_the_blur_model_is_served_to_the_page(p2p_server, name, content_type, starts):
    status, headers, body = fetch(f"{p2p_server.url}/vendor/selfie_segmentation/{name}")
    assert status == 200
    assert headers["Content-Type"].startswith(content_type)
    assert len(body) > 1000 and body.startswith(starts)


def test_without_the_blur_model_the_server_runs_and_the_page_offers_no_blur(tmp_path):
    server = ServerProcess(args=("--segmentation-dir", str(tmp_path))).start()
    try:
        assert server.get_json("/health")["status"] == "ok"
        status, _, _ = fetch(f"{server.url}/vendor/selfie_segmentation/selfie_segmentation.js")
        assert status == 404  # what the page asks before showing the setting
        assert "background blur unavailable" in server.log()
    finally:
        server.stop()


def run_server(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m server ARGS`` to completion (for runs that exit by themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_startup_fails_clearly_without_the_client_bundle(tmp_path):
    result = run_server("--port", "0", "--client-dir", str(tmp_path))
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
    result = run_server("--help")
    assert result.returncode == 0
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


def self_signed(folder):
    """A throwaway certificate and key for 127.0.0.1 (PEM files)."""
    import datetime  # noqa: PLC0415
    import ipaddress  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roomrelay test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_serves_the_api_and_socketio(tmp_path):
    import socketio  # noqa: PLC0415

    server = ServerProcess(args=(), tls=self_signed(tmp_path)).start()
    try:
        assert server.url.startswith("https://")
        assert server.get_json("/health")["status"] == "ok"
        client = socketio.AsyncClient(ssl_verify=False)
        await client.connect(server.url)
        reply = await client.call("join_room", {"room": "secure", "nickname": "tls"})
        assert reply["ok"] and reply["ice_servers"] == []
        await client.disconnect()
    finally:
        server.stop()


def test_tls_needs_both_certificate_and_key(tmp_path):
    cert, _ = self_signed(tmp_path)
    result = run_server("--port", "0", "--tls-cert", str(cert))
    assert result.returncode == 2 and "--tls-cert and --tls-key go together" in result.stderr


async def test_ice_servers_reach_clients_in_the_join_ack(server_pool, connect, room):
    servers = '[{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]'
    server = server_pool.get("--media", "p2p", "--ice-servers", servers)
    client = await connect(server)
    reply = (await client.call("join_room", {"room": room()}))[0]
    assert reply["ice_servers"] == [
        {"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}
    ]


def test_ice_server_settings_are_checked():
    assert load_settings(
        [], {"ICE_SERVERS": "stun:a.example:3478, stun:b.example"}
    ).ice_servers == (
        {"urls": "stun:a.example:3478"},
        {"urls": "stun:b.example"},
    )
    for bad in ("http://a.example", '[{"url": "stun:x"}]', '[{"urls": "stun:x", "extra": 1}]'):
        with pytest.raises(SystemExit):
            load_settings([], {"ICE_SERVERS": bad})


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True])
async def test_a_client_leaving_as_the_server_stops_does_not_hold_it_up(tmp_path, tls):
    """engine.io's goodbye to a client whose connection closes at that moment never ends."""
    import socketio  # noqa: PLC0415

    server = ServerProcess(args=(), tls=self_signed(tmp_path) if tls else None)
    for _ in range(3):
        server.port = free_port()
        server.start()
        try:
            client = socketio.AsyncClient(ssl_verify=False)
            await client.connect(server.url, transports=["websocket"])
            # Leaving a room broadcasts room_change, also to the socket that is closing.
            assert (await client.call("join_room", {"room": "r", "nickname": "n"}))["ok"]
            leaving = asyncio.create_task(client.disconnect())
            await asyncio.sleep(0)  # the client's goodbye is on its way
            server.process.terminate()
            await leaving
            assert await asyncio.to_thread(server.process.wait, 10) is not None
        finally:
            server.kill()

"""Operations: JSON logs, the Docker image, the compose file's settings."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import time
import wave

import pytest

from server.client import RoomClient
from server.settings import SETTINGS_SPEC, load_settings
from tests.support.media import TONES, ToneTrack
from tests.support.polling import eventually
from tests.support.server import PROJECT_ROOT, ServerProcess


async def test_json_logs_are_one_object_per_line(connect, room):
    server = ServerProcess(args=("--media", "p2p", "--log-format", "json")).start()
    try:
        client = await connect(server)
        await client.call("enter_room", room())
        await client.call("nickname", 5)  # refused: logged at info
        await client.close()
    finally:
        server.stop()
    lines = [line for line in server.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert {"ts", "level", "logger", "message"} <= entries[0].keys()
    assert any(e["message"].startswith("roomrelay ") and e["level"] == "info" for e in entries)
    assert any("refused 'nickname'" in e["message"] for e in entries)


def test_every_variable_in_the_compose_file_is_a_setting():
    compose = (PROJECT_ROOT / "docker-compose.yml").read_text()
    service = compose.split("  roomrelay:", 1)[1].split("\n  redis:", 1)[0]
    variables = re.findall(r"^      ([A-Z_]+):", service, re.MULTILINE)
    known = {spec.metadata["env"] for spec in SETTINGS_SPEC}
    assert variables and set(variables) <= known, set(variables) - known
    # The defaults the compose file passes (empty strings included) are accepted.
    load_settings(
        [],
        {
            "API_KEY": "k",
            "API_SECRET": "x" * 32,
            "OPEN_ROOMS": "",
            "RECORD_DIR": "",
            "METRICS_PORT": "9100",
            "METRICS_HOST": "127.0.0.1",
            "WEBHOOK_URL": "",
            "ICE_SERVERS": "",
        },
    )


def docker_engine_problem() -> str | None:
    """Why the Docker image cannot be built here, or None when it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command on this machine"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        return f"no Docker engine reachable ({(info.stderr or info.stdout).strip()[:200]})"
    return None


def test_the_docker_image_builds_and_has_the_server():
    problem = docker_engine_problem()
    if problem is not None:
        pytest.skip(f"Docker image build skipped: {problem}")
    tag = "roomrelay-test:latest"
    subprocess.run(["docker", "build", "-t", tag, str(PROJECT_ROOT)], check=True, timeout=1800)
    version = subprocess.run(
        ["docker", "run", "--rm", tag, "roomrelay", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "--webhook-url" in version.stdout


@pytest.mark.media
async def test_sigterm_drains_tells_clients_and_finalizes_the_recording(tmp_path, room):
    server = ServerProcess(args=("--media", "relay", "--record-dir", str(tmp_path))).start()
    name = room("drain")
    talker = RoomClient(server.url, nickname="ada")
    try:
        await talker.connect()
        await talker.join(name, audio=ToneTrack(TONES[2]))
        await talker.wait_connected()
        await eventually(lambda: list((tmp_path / name).glob("*.wav")), 20)
        await eventually(lambda: server.get_json("/rooms")["rooms"][0]["recording"], 20)
        await asyncio.sleep(1.5)  # some audio on disk (the recorder flushes every second)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 30)
        stopped_in = time.monotonic() - started
        await eventually(lambda: not talker.sio.connected, 10)
    finally:
        await talker.close()
    assert server.process.returncode == 0, server.log()[-2000:]
    assert stopped_in < 10
    (path,) = (tmp_path / name).glob("*.wav")
    with wave.open(str(path)) as wav:  # the header's sizes were written: a complete file
        frames = wav.getnframes()
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        assert frames * 2 + 44 == path.stat().st_size
        assert frames / 16000 >= 1.0

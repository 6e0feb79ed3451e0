"""The README documents what the code does: every setting appears in its configuration table."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from server.settings import SETTINGS_SPEC
from tests.support.browser import write_tone
from tests.support.server import PROJECT_ROOT


def test_readme_configuration_table_lists_every_setting():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for spec in SETTINGS_SPEC:
        flag = "--" + spec.name.replace("_", "-")
        documented = f"`{flag}` | `{spec.metadata['env']}`" in readme or (
            f"`{flag}` / `--no-{flag[2:]}` | `{spec.metadata['env']}`" in readme
        )
        assert documented, flag


def test_ci_runs_the_readme_test_command():
    readme = (PROJECT_ROOT / "README.md").read_text()
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in readme and "scripts/test.sh" in ci


@pytest.mark.media
async def test_readme_python_client_example_runs(relay_server, room_clients, tmp_path):
    """The README's Python client example, run as written against a real server."""
    speaker = await room_clients(relay_server, "standup", 0)

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Python client") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("http://localhost:8000", relay_server.url)
    write_tone(tmp_path / "greeting.wav", 440)
    script = tmp_path / "example.py"
    script.write_text(code)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin"},
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    joined = [info["nickname"] for event, info in speaker.events if event == "user_joined"]
    assert "recorder-bot" in joined


async def test_readme_audio_consumer_example_works():
    """The README's custom consumer, executed as written, emits to the room when loud."""
    from server.audio import AudioChunk  # noqa: PLC0415

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("## Audio consumers") :]
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), namespace)
    emitted = []

    class Room:
        async def emit(self, room, event, data):
            emitted.append((room, event, data))

    consumer = namespace["LoudnessAlarm"]()
    await consumer.start(Room())
    quiet, loud = (bytes(640), (30000).to_bytes(2, "little", signed=True) * 320)
    await consumer.on_audio(AudioChunk("r", "p", "ada", quiet, 0.0))
    await consumer.on_audio(AudioChunk("r", "p", "ada", loud, 0.02))
    assert [(room, event) for room, event, _ in emitted] == [("r", "too_loud")]

"""``WS /ws/audio/{client_id}``: PCM out of the audio tap, and PCM in as a participant."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import numpy as np
import pytest

from server.client import RoomClient
from tests.support.media import TONES, ToneTrack, identify_audio, nearest_tone
from tests.support.polling import eventually

RATE = 16000


def spectrum_peaks(pcm: bytes, count: int) -> list[float]:
    """The ``count`` strongest frequencies (Hz) of 16 kHz s16le PCM, 100 Hz apart at least."""
    signal = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    spectrum[:10] = 0
    peaks: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        frequency = index * RATE / len(signal)
        if all(abs(frequency - peak) > 100 for peak in peaks):
            peaks.append(float(frequency))
        if len(peaks) == count:
            return peaks
    return peaks


def tone_pcm(frequency: float, seconds: float) -> bytes:
    n = np.arange(int(RATE * seconds))
    return (0.3 * 32767 * np.sin(2 * np.pi * frequency * n / RATE)).astype("<i2").tobytes()


class AudioSocket:
    """A /ws/audio client: JSON control messages, binary PCM."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self.url = url.replace("http", "ws", 1) + f"/ws/audio/{uuid.uuid4().hex[:8]}"
        self.socket: aiohttp.ClientWebSocketResponse | None = None

    async def __aenter__(self) -> AudioSocket:
        self.socket = await self._session.ws_connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.socket is not None
        await self.socket.close()

    async def control(self, message: dict) -> dict:
        """Send a control message; the next text message is its answer."""
        assert self.socket is not None
        await self.socket.send_str(json.dumps(message))
        return await self.text()

    async def text(self) -> dict:
        assert self.socket is not None
        while True:
            message = await asyncio.wait_for(self.socket.receive(), 10)
            if message.type is aiohttp.WSMsgType.TEXT:
                return json.loads(message.data)

    async def pcm(self, seconds: float) -> bytes:
        assert self.socket is not None
        received = b""
        while len(received) < seconds * RATE * 2:
            message = await asyncio.wait_for(self.socket.receive(), 10)
            if message.type is aiohttp.WSMsgType.BINARY:
                received += message.data
        return received


@pytest.fixture
async def speakers(relay_server, room):
    """Two native clients in one room, each publishing its own tone."""
    name = room("voice")
    clients = [RoomClient(relay_server.url, nickname=f"s{i}") for i in range(2)]
    for client, tone in zip(clients, (TONES[1], TONES[4]), strict=True):
        await client.connect()
        await client.join(name, audio=ToneTrack(tone))
        await client.wait_connected()
    yield name, clients
    for client in clients:
        await client.close()


@pytest.mark.media
async def test_one_participants_audio_and_the_rooms_mix_come_out_as_pcm(
    relay_server, http, speakers
):
    name, clients = speakers
    async with (
        AudioSocket(http, relay_server.url) as one,
        AudioSocket(http, relay_server.url) as mix,
    ):
        started = await one.control(
            {"type": "start_streaming", "room": name, "peer_id": clients[0].peer_id}
        )
        assert started["type"] == "log" and started["sample_rate"] == RATE
        await one.pcm(0.3)  # start-up
        assert nearest_tone(spectrum_peaks(await one.pcm(1.0), 1)[0]) == TONES[1]

        assert (await mix.control({"type": "start_streaming", "data": {"room": name}}))["room"]
        await mix.pcm(0.3)
        peaks = sorted(nearest_tone(f) for f in spectrum_peaks(await mix.pcm(1.0), 2))
        assert peaks == sorted([TONES[1], TONES[4]])

        status = await mix.control({"type": "fetch_output"})
        assert status["streaming"] and status["peer_id"] is None and not status["publishing"]
        tapped = taps(relay_server)

    # The listeners left and nothing else wants this room's audio: it is no longer decoded.
    await eventually(lambda: taps(relay_server) == tapped - 2)
    async with AudioSocket(http, relay_server.url) as again:  # and is tapped again on demand
        await again.control(
            {"type": "start_streaming", "room": name, "peer_id": clients[1].peer_id}
        )
        await again.pcm(0.3)
        assert nearest_tone(spectrum_peaks(await again.pcm(1.0), 1)[0]) == TONES[4]


def taps(server) -> int:
    return server.get_json("/stats")["media"]["audio"]["taps"]


@pytest.mark.media
async def test_pcm_sent_in_is_heard_by_a_webrtc_subscriber(relay_server, http, room):
    name = room("bot")
    listener = RoomClient(relay_server.url, nickname="listener")
    await listener.connect()
    try:
        await listener.join(name)
        async with AudioSocket(http, relay_server.url) as bot:
            started = await bot.control(
                {"type": "send_input", "data": {"room": name, "nickname": "voicebot"}}
            )
            assert started["message"] == "publishing", started
            peer_id = started["peer_id"]
            assert bot.socket is not None
            tone = tone_pcm(TONES[2], 4.0)
            chunk = RATE * 2 // 10  # 100 ms

            async def speak() -> None:
                for start in range(0, len(tone), chunk):
                    await bot.socket.send_bytes(tone[start : start + chunk])
                    await asyncio.sleep(0.1)

            speaking = asyncio.create_task(speak())
            await listener.wait_for_media([peer_id], kinds=("audio",))
            assert listener.peers[peer_id].nickname == "voicebot"
            heard = await identify_audio(listener.subscribe(peer_id, "audio"), seconds=0.5)
            assert nearest_tone(heard) == TONES[2]
            await speaking
        await listener.wait_until(lambda: peer_id not in listener.peers)  # gone with the socket
    finally:
        await listener.close()


BAD_CONTROLS = [
    ("not json", "bad_request"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"no": "type"}', "bad_request"),
    ('{"type": "start_streaming", "room": ""}', "invalid_room_name"),
    ('{"type": "start_streaming", "webrtc_id": "nope"}', "not_found"),
    ('{"type": "send_input", "data": 5}', "bad_request"),
]


@pytest.mark.parametrize(("text", "code"), BAD_CONTROLS)
async def test_bad_control_messages_get_errors(relay_server, http, text, code):
    async with AudioSocket(http, relay_server.url) as client:
        assert client.socket is not None
        await client.socket.send_str(text)
        error = await client.text()
        assert error["type"] == "error" and error["code"] == code, error
        status = await client.control({"type": "fetch_output"})
        assert not status["streaming"] and not status["publishing"]


async def test_pcm_before_send_input_is_refused(relay_server, http):
    async with AudioSocket(http, relay_server.url) as client:
        assert client.socket is not None
        await client.socket.send_bytes(b"\x00\x00" * 320)
        assert (await client.text())["code"] == "not_publishing"

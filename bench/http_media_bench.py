"""Offer-to-answer time through each signalling door, against native Socket.IO in one run.

For each of ``--sessions`` rounds, a fresh aiortc offer (audio + video, sendonly) goes
through native Socket.IO (the baseline: ``join_room`` then ``offer`` until ``answer``),
``WS /ws`` (``join_room``, ``offer`` until ``answer``), WHIP (``POST /whip`` until 201)
and FastRTC (``POST /webrtc/offer``), each into a room of its own, interleaved. The
bench prints each door's median and its ratio to the baseline; offers are created
before the clock starts, sessions are ended after it stops.

    .venv/bin/python -m bench.http_media_bench              # quick: 10 rounds
    .venv/bin/python -m bench.http_media_bench --sessions 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import socketio
from aiortc import RTCPeerConnection

from bench.metrics_bench import start_server
from bench.relay_bench import free_port
from tests.support.media import ColourTrack, ToneTrack

Ender = Callable[[], Awaitable[object]]  # ends the session, outside the timing
Door = Callable[[aiohttp.ClientSession, str, str, str], Awaitable[Ender]]


def deleter(http: aiohttp.ClientSession, url: str) -> Ender:
    async def delete() -> None:
        async with http.delete(url) as reply:
            await reply.read()

    return delete


async def native(http: aiohttp.ClientSession, url: str, room: str, sdp: str) -> Ender:
    client = socketio.AsyncClient(reconnection=False)
    answered = asyncio.get_running_loop().create_future()
    client.on("answer", lambda answer: answered.done() or answered.set_result(answer))
    await client.connect(url, transports=["websocket"], wait_timeout=10)
    await client.call("join_room", {"room": room, "nickname": "bench"}, timeout=10)
    await client.emit("offer", {"type": "offer", "sdp": sdp})
    await asyncio.wait_for(answered, 20)
    return client.disconnect


async def websocket(http: aiohttp.ClientSession, url: str, room: str, sdp: str) -> Ender:
    socket = await http.ws_connect(url.replace("http", "ws", 1) + "/ws")
    await socket.send_str(json.dumps({"type": "join_room", "room_name": room, "nickname": "b"}))
    await socket.send_str(json.dumps({"type": "offer", "sdp": sdp}))
    async for message in socket:
        if json.loads(message.data)["type"] == "answer":
            break
    return socket.close


async def whip(http: aiohttp.ClientSession, url: str, room: str, sdp: str) -> Ender:
    headers = {"Content-Type": "application/sdp"}
    async with http.post(f"{url}/whip/{room}", data=sdp, headers=headers) as reply:
        assert reply.status == 201, await reply.text()
        location = reply.headers["Location"]
    return deleter(http, url + location)


async def fastrtc(http: aiohttp.ClientSession, url: str, room: str, sdp: str) -> Ender:
    body = {"sdp": sdp, "modality": "audio-video", "mode": "send", "room": room}
    async with http.post(f"{url}/webrtc/offer", json=body) as reply:
        webrtc_id = (await reply.json())["webrtc_id"]
    return deleter(http, f"{url}/fastrtc/streams/{webrtc_id}")


DOORS: dict[str, Door] = {"native": native, "ws": websocket, "whip": whip, "fastrtc": fastrtc}


async def fresh_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver(ToneTrack(440.0), direction="sendonly")
    pc.addTransceiver(ColourTrack((200, 30, 30)), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, 4, media="relay")
    timings: dict[str, list[float]] = {name: [] for name in DOORS}
    try:
        async with aiohttp.ClientSession() as http:
            for round_index in range(args.sessions):
                for name, door in DOORS.items():
                    pc, sdp = await fresh_offer()
                    started = time.perf_counter()
                    end = await door(http, url, f"{name}-{round_index}", sdp)
                    timings[name].append(time.perf_counter() - started)
                    await end()
                    await pc.close()
    finally:
        server.terminate()
        server.wait(30)
    baseline = statistics.median(timings["native"])
    print(f"offer -> answer, {args.sessions} sessions each (median, ratio to native):")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:8s} {median * 1000:7.1f} ms  x{median / baseline:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

"""Hostile inputs from issue 18, built from a real aiortc offer: used by tests and the bench.

Each builder takes a valid offer (so every other check passes) and returns an
SDP that stays within the 64 KiB size limit, as an attacker's would.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCPeerConnection

MAX_SDP = 64 * 1024


async def real_offer(kinds: tuple[str, ...] = ("audio", "video")) -> tuple[RTCPeerConnection, str]:
    """An offer from a real aiortc peer (the caller closes the connection)."""
    pc = RTCPeerConnection()
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def _fill(sdp: str, make_line: Callable[[int], str], budget: int = MAX_SDP) -> str:
    """Append lines ``make_line(i)`` to ``sdp`` while it stays under ``budget`` bytes."""
    lines = [sdp.rstrip("\r\n")]
    size = len(lines[0]) + 2
    index = 0
    while True:
        line = make_line(index)
        if size + len(line) + 2 > budget:
            break
        lines.append(line)
        size += len(line) + 2
        index += 1
    return "\r\n".join(lines) + "\r\n"


def rtpmap_feedback_bomb(sdp: str) -> str:
    """1,398 x ``a=rtpmap:96 VP8/90000`` then ``a=rtcp-fb:* x`` to 64 KiB (issue: 2,145).

    aiortc builds one feedback object per codec and feedback line: ~3 M objects,
    25 s of CPU on the event loop before the budget existed.
    """
    bomb = sdp.rstrip("\r\n") + "\r\n" + "a=rtpmap:96 VP8/90000\r\n" * 1398
    return _fill(bomb, lambda _: "a=rtcp-fb:* x")


def rtx_bomb(sdp: str) -> str:
    """The rtx-line variant: rtx codecs pointing at VP8, then feedback for them to 64 KiB.

    aiortc deep-copies every rtx codec it accepts, with all its feedback objects.
    """
    head = sdp.rstrip("\r\n") + "\r\n" + "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n" * 800
    return _fill(head, lambda _: "a=rtcp-fb:97 nack")


def candidate_bomb(sdp: str, count: int = 870) -> str:
    """``count`` distinct host candidates in the offer (reflection: STUN to each)."""
    candidates = "".join(
        f"a=candidate:{i} 1 udp 2130706431 198.51.100.{i % 250 + 1} {10000 + i} typ host\r\n"
        for i in range(count)
    )
    return sdp.rstrip("\r\n") + "\r\n" + candidates


def trickled_candidates(count: int = 500) -> list[dict[str, object]]:
    """``count`` distinct trickled candidates, as ``ice`` event payloads."""
    return [
        {
            "candidate": f"candidate:{i} 1 udp 2130706431 198.51.100.{i % 250 + 1} "
            f"{20000 + i} typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        for i in range(count)
    ]


def with_candidate_address(sdp: str, address: str) -> str:
    """The offer plus one host candidate on ``address``."""
    line = f"a=candidate:99 1 udp 2130706431 {address} 40000 typ host\r\n"
    return sdp.rstrip("\r\n") + "\r\n" + line


BOMBS = {
    "rtpmap+rtcp-fb": rtpmap_feedback_bomb,
    "rtx": rtx_bomb,
    "870-candidates": candidate_bomb,
}

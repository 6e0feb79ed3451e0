"""The SDP budget on its own: real offers pass, every kind of bomb is refused with a reason."""

from __future__ import annotations

import pytest

from bench.attacks import (
    BOMBS,
    candidate_bomb,
    real_offer,
    with_candidate_address,
)
from server.media import sdp_budget
from server.media.sdp_budget import check_candidate, check_offer
from server.validation import ProtocolError

SECTIONS = 72


@pytest.fixture
async def offer():
    pc, sdp = await real_offer()
    yield sdp
    await pc.close()


def refusal(sdp: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        check_offer(sdp, SECTIONS)
    return caught.value


async def test_a_real_aiortc_offer_passes(offer):
    check_offer(offer, SECTIONS)


@pytest.mark.parametrize("bomb", sorted(BOMBS))
async def test_each_bomb_is_refused_with_a_reason(offer, bomb):
    error = refusal(BOMBS[bomb](offer))
    assert error.code == "invalid_sdp" and error.message


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("a=rtcp-fb:* nack\r\n" * 5, "a=rtcp-fb:*"),
        ("".join(f"a=rtcp-fb:96 x{i}\r\n" for i in range(129)), "a=rtcp-fb"),
        ("a=fmtp:96 x=1\r\n" * 65, "a=fmtp"),
        ("".join(f"a=extmap:{i} urn:x\r\n" for i in range(1, 34)), "a=extmap"),
        ("".join(f"a=ssrc:{i} cname:x\r\n" for i in range(17)), "SSRC"),
        ("a=ssrc:1 cname:x\r\n" * 65, "a=ssrc"),
        ("".join(f"a=rtpmap:{i} VP8/90000\r\n" for i in range(103, 127)), None),
        ("a=x:" + "y" * 5000 + "\r\n", "longer than"),
    ],
    ids=["wildcard-fb", "fb", "fmtp", "extmap", "ssrcs", "ssrc-lines", "codecs-ok", "long-line"],
)
async def test_per_section_caps(offer, extra, reason):
    sdp = offer.rstrip("\r\n") + "\r\n" + extra
    if reason is None:
        check_offer(sdp, SECTIONS)
        return
    assert reason in refusal(sdp).message


async def test_media_sections_over_the_limit_are_too_large(offer):
    with pytest.raises(ProtocolError) as caught:
        check_offer(offer, 1)
    assert caught.value.code == "too_large"


async def test_offer_wide_codec_budget(offer):
    """Many sections each just under the per-section caps still add up to a refusal."""
    head, _, _ = offer.partition("m=")
    section = "m=video 9 UDP/TLS/RTP/SAVPF " + " ".join(map(str, range(100, 127))) + "\r\n"
    section += "".join(f"a=rtpmap:{pt} VP8/90000\r\n" for pt in range(100, 127))
    section += "".join(f"a=rtcp-fb:{pt} nack\r\n" for pt in range(100, 127)) * 4
    assert "codecs x" in refusal(head + section * 20).message
    check_offer(head + section * 10, SECTIONS)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "0.0.0.0", "::", "224.0.0.251", "ff02::1", "255.255.255.255",
     "::ffff:127.0.0.1", "evil.example.com"],
)  # fmt: skip
async def test_unusable_candidate_addresses_are_refused(offer, address):
    assert "candidate address" in refusal(with_candidate_address(offer, address)).message
    with pytest.raises(ProtocolError) as caught:
        check_candidate(f"candidate:1 1 udp 1 {address} 9 typ host")
    assert caught.value.code == "invalid_candidate"


@pytest.mark.parametrize(
    "address", ["192.0.2.7", "10.1.2.3", "2001:db8::1", "fe80::1%eth0", "0b9c-41d2.local"]
)
async def test_usable_candidate_addresses_pass(offer, address):
    check_offer(with_candidate_address(offer, address), SECTIONS)
    check_candidate(f"candidate:1 1 udp 1 {address} 9 typ host")


async def test_loopback_is_allowed_when_configured(offer):
    sdp_budget.configure_candidates(allow_loopback=True)
    try:
        check_offer(with_candidate_address(offer, "127.0.0.1"), SECTIONS)
    finally:
        sdp_budget.configure_candidates(allow_loopback=False)


async def test_distinct_candidates_are_capped_not_repeats(offer):
    check_offer(offer + with_candidate_address("", "192.0.2.7") * 200, SECTIONS)
    check_offer(candidate_bomb(offer, sdp_budget.MAX_CANDIDATES - 4), SECTIONS)
    assert "ICE candidates" in refusal(candidate_bomb(offer, sdp_budget.MAX_CANDIDATES)).message

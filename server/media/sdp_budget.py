"""Cheap, linear limits on an SDP offer and ICE candidates, checked before aiortc parses them.

aiortc's SDP parser does work proportional to codecs x feedback lines per media
section (a 64 KiB offer of repeated ``a=rtpmap`` and ``a=rtcp-fb:*`` lines once
cost 25 s of CPU on the event loop), and it connects to every candidate address an
offer names (3,000 STUN requests to addresses of the sender's choosing). This
module scans the text once, line by line, without building anything, and refuses
an offer or candidate that no real browser or aiortc client would send.

It deliberately imports nothing from aiortc: it must stay cheaper than the parser
it protects.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..validation import ProtocolError

# Chromium 156's video section carries 23 rtpmap, 50 rtcp-fb, 20 fmtp and 11 extmap
# lines and 2 SSRCs (audio: 8, 1, 2, 4); an aiortc client's fewer. The caps leave
# room for browsers to grow while keeping aiortc's parser to a few tens of ms.
MAX_FORMATS = 64  # payload types on one m-line, and distinct rtpmap lines
MAX_FEEDBACK = 128  # a=rtcp-fb lines per media section
MAX_WILDCARD_FEEDBACK = 4  # a=rtcp-fb:* lines per section (each applies to every codec)
MAX_FMTP = 64  # a=fmtp lines per media section
# aiortc matches every rtcp-fb and fmtp line against every codec of its section, and
# copies every codec it shares with us: these offer-wide sums bound its work. Chromium
# offers ~1,700 pairs and ~20 codecs per 1 KiB (a 64 KiB offer: ~40k pairs, ~450 codecs).
MAX_CODEC_PAIRS = 49_152  # sum over sections of codecs x (rtcp-fb + fmtp) lines
MAX_CODECS = 768  # a=rtpmap lines in the whole offer
MAX_EXTMAP = 32  # a=extmap lines per media section (ids are 1-255, browsers use ~15)
MAX_SSRC_LINES = 64  # a=ssrc / a=ssrc-group lines per media section
MAX_SSRCS = 16  # distinct SSRCs per media section (simulcast with RTX needs 6)
MAX_CANDIDATES = 32  # distinct candidates in one offer (aiortc repeats them per section)
MAX_LINE = 4096  # characters in one SDP line
# Hostnames are only accepted as mDNS names (browsers hide local addresses behind them).
MDNS_NAME = re.compile(r"^[A-Za-z0-9-]{1,63}\.local\.?$")


def _invalid(reason: str) -> ProtocolError:
    return ProtocolError("invalid_sdp", reason)


@dataclass
class CandidatePolicy:
    """Which remote candidate addresses the server is willing to send STUN checks to."""

    allow_loopback: bool = False

    def check(self, address: str, code: str = "invalid_sdp") -> None:
        """Raise ProtocolError unless ``address`` is a usable unicast address or mDNS name."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            if MDNS_NAME.match(address):
                return
            raise ProtocolError(
                code, f"candidate address {address[:64]!r} is not an IP address or mDNS name"
            ) from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified:
            raise ProtocolError(code, f"candidate address {address} is unspecified")
        if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            raise ProtocolError(code, f"candidate address {address} is multicast or broadcast")
        if ip.is_loopback and not self.allow_loopback:
            raise ProtocolError(code, f"candidate address {address} is loopback")


# Process-wide, set once at startup from the settings (configure_candidates).
POLICY = CandidatePolicy()


def configure_candidates(*, allow_loopback: bool) -> None:
    """Apply the operator's candidate policy (``--allow-loopback-candidates``)."""
    POLICY.allow_loopback = allow_loopback


@dataclass(frozen=True)
class Candidate:
    """The parts of an ``a=candidate`` line that decide where STUN checks would go."""

    foundation: str
    transport: str
    address: str
    port: int


def candidate_fields(text: str, code: str = "invalid_sdp") -> Candidate:
    """Split a candidate (with or without its ``candidate:`` prefix) and check its address."""
    bits = text.strip().removeprefix("candidate:").split()
    if len(bits) < 8 or bits[6] != "typ":
        raise ProtocolError(code, f"unreadable ICE candidate {text[:80]!r}")
    try:
        port = int(bits[5])
    except ValueError:
        raise ProtocolError(code, f"candidate port {bits[5][:16]!r} is not a number") from None
    if not 0 < port < 65536:
        raise ProtocolError(code, f"candidate port {port} is out of range")
    POLICY.check(bits[4], code)
    return Candidate(bits[0], bits[2].lower(), bits[4].lower(), port)


def check_candidate(text: str) -> None:
    """A trickled candidate: readable, and an address we may send checks to.

    Refusals use the code the ``ice`` event already documents, ``invalid_candidate``.
    """
    if text.strip():
        candidate_fields(text, "invalid_candidate")


@dataclass
class _Section:
    """Counters for one media section (or the session part before the first m-line)."""

    number: int
    formats: int = 0
    payload_types: set[str] | None = None
    feedback: int = 0
    wildcard_feedback: int = 0
    fmtp: int = 0
    extmap: int = 0
    ssrc_lines: int = 0
    ssrcs: set[str] | None = None

    def codec_pairs(self) -> int:
        """How many codec/line comparisons aiortc's parser makes for this section."""
        return len(self.payload_types or ()) * (self.feedback + self.fmtp)

    def where(self) -> str:
        return f"media section {self.number}" if self.number else "the session part"


def _count_attribute(section: _Section, attribute: str, value: str) -> None:
    if attribute == "rtpmap":
        payload_type = value.split(" ", 1)[0]
        seen = section.payload_types = section.payload_types or set()
        if payload_type in seen:
            raise _invalid(f"{section.where()} maps payload type {payload_type[:8]} twice")
        seen.add(payload_type)
        _cap(section, len(seen), MAX_FORMATS, "a=rtpmap")
    elif attribute == "rtcp-fb":
        section.feedback += 1
        _cap(section, section.feedback, MAX_FEEDBACK, "a=rtcp-fb")
        if value.startswith("*"):
            section.wildcard_feedback += 1
            _cap(section, section.wildcard_feedback, MAX_WILDCARD_FEEDBACK, "a=rtcp-fb:*")
    elif attribute == "fmtp":
        section.fmtp += 1
        _cap(section, section.fmtp, MAX_FMTP, "a=fmtp")
    elif attribute == "extmap":
        section.extmap += 1
        _cap(section, section.extmap, MAX_EXTMAP, "a=extmap")
    elif attribute in ("ssrc", "ssrc-group"):
        section.ssrc_lines += 1
        _cap(section, section.ssrc_lines, MAX_SSRC_LINES, "a=ssrc")
        if attribute == "ssrc":
            ssrcs = section.ssrcs = section.ssrcs or set()
            ssrcs.add(value.split(" ", 1)[0])
            _cap(section, len(ssrcs), MAX_SSRCS, "distinct SSRC")


def _cap(section: _Section, count: int, limit: int, what: str) -> None:
    if count > limit:
        raise _invalid(f"{section.where()} has more than {limit} {what} lines")


def check_offer(sdp: str, max_media_sections: int) -> None:
    """Raise ProtocolError if ``sdp`` exceeds any budget; one pass, nothing parsed for real.

    Lines are split exactly as aiortc splits them (``str.splitlines``), so the
    counts are the ones its parser would see.
    """
    section = _Section(0)
    sections = 0
    pairs = codecs = 0
    candidates: set[Candidate] = set()
    for line in sdp.splitlines():
        if len(line) > MAX_LINE:
            raise _invalid(f"an SDP line is longer than {MAX_LINE} characters")
        if line.startswith("m="):
            pairs += section.codec_pairs()
            codecs += len(section.payload_types or ())
            sections += 1
            if sections > max_media_sections:
                raise ProtocolError(
                    "too_large", f"the offer has more than {max_media_sections} media sections"
                )
            section = _Section(sections)
            if len(line.split()) - 3 > MAX_FORMATS:
                raise _invalid(f"{section.where()} lists more than {MAX_FORMATS} formats")
        elif line.startswith("a="):
            attribute, _, value = line[2:].partition(":")
            if attribute == "candidate":
                candidates.add(candidate_fields(value))
                if len(candidates) > MAX_CANDIDATES:
                    raise _invalid(f"the offer has more than {MAX_CANDIDATES} ICE candidates")
            else:
                _count_attribute(section, attribute, value)
    if codecs + len(section.payload_types or ()) > MAX_CODECS:
        raise _invalid(f"the offer has more than {MAX_CODECS} a=rtpmap lines")
    if pairs + section.codec_pairs() > MAX_CODEC_PAIRS:
        raise _invalid(
            f"the offer has too many codecs x (rtcp-fb + fmtp) lines (at most {MAX_CODEC_PAIRS})"
        )

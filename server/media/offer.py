"""Checking a client's SDP offer before it touches a peer connection, and ICE candidate parsing.

aiortc applies an offer m-line by m-line and cannot roll back, so anything that
would make ``setRemoteDescription`` fail half-way is refused here first: bad
syntax, missing ICE or DTLS parameters, no BUNDLE, no codec we can use.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCIceCandidate, RTCSessionDescription

from ..validation import SOURCES, IceCandidate, ProtocolError
from .aiortc_hooks import (
    MediaDescription,
    common_codecs,
    parse_candidate_line,
    parse_sdp,
    supported_codecs,
)
from .sdp_budget import check_candidate, check_offer

SENDING = ("sendrecv", "sendonly")
RECEIVING = ("sendrecv", "recvonly")


@dataclass(frozen=True)
class MediaSection:
    """One m-line of an offer, seen from the client: what it sends and wants to receive."""

    mid: str
    kind: str
    direction: str
    codecs: tuple[str, ...]  # mime types we share with the client, in its order
    source: str = ""  # what a sending m-line carries: microphone, camera, screen, screen_audio

    @property
    def client_sends(self) -> bool:
        return self.direction in SENDING

    @property
    def client_receives(self) -> bool:
        return self.direction in RECEIVING


@dataclass(frozen=True)
class ParsedOffer:
    """A validated offer, ready for ``setRemoteDescription``."""

    description: RTCSessionDescription
    ice_ufrag: str
    sections: tuple[MediaSection, ...]

    def section(self, mid: str | None) -> MediaSection | None:
        return next((s for s in self.sections if s.mid == mid), None)


def _invalid(message: str) -> ProtocolError:
    return ProtocolError("invalid_sdp", message)


def parse_offer(
    sdp: str, max_media_sections: int, sources: dict[str, str] | None = None
) -> ParsedOffer:
    """Validate ``sdp`` as an offer aiortc can apply completely, or raise ProtocolError.

    ``sources`` names what some m-lines carry (by mid); the others carry the kind's first
    source (a microphone, a camera).
    """
    check_offer(sdp, max_media_sections)
    sources = sources or {}
    try:
        parsed = parse_sdp(sdp)
    except Exception as exc:  # aiortc's parser raises whatever it trips over
        raise _invalid(f"the offer could not be parsed ({type(exc).__name__})") from None
    if not parsed.media:
        raise _invalid("the offer has no media sections")
    if len(parsed.media) > max_media_sections:
        raise ProtocolError(
            "too_large", f"the offer has more than {max_media_sections} media sections"
        )
    bundle = next((group for group in parsed.group if group.semantic == "BUNDLE"), None)
    mids = [media.rtp.muxId for media in parsed.media]
    if None in mids or len(set(mids)) != len(mids):
        raise _invalid("every media section needs its own a=mid")
    if bundle is None or set(bundle.items) != set(mids):
        raise ProtocolError(
            "unsupported_sdp", "the offer must BUNDLE all media sections (max-bundle)"
        )
    if not all(
        media.ice
        and media.ice.usernameFragment
        and media.ice.password
        and media.dtls
        and media.dtls.fingerprints
        for media in parsed.media
    ):
        raise _invalid("the offer needs ICE credentials and a DTLS fingerprint")
    ufrags = {media.ice.usernameFragment for media in parsed.media if media.ice}
    if len(ufrags) != 1:
        raise _invalid("all media sections must share one ICE username fragment")
    bundle_only = bundle_only_sections(sdp)
    sections = tuple(
        _section(media, sources, bundle_only=index in bundle_only)
        for index, media in enumerate(parsed.media)
    )
    return ParsedOffer(
        description=RTCSessionDescription(sdp=sdp, type="offer"),
        ice_ufrag=ufrags.pop() or "",
        sections=sections,
    )


def bundle_only_sections(sdp: str) -> set[int]:
    """Indexes of the m-lines marked ``a=bundle-only`` (aiortc's parser drops the mark).

    RFC 8843 has such m-lines offered with port 0 (GStreamer's webrtcbin does it), which
    otherwise means a stopped transceiver.
    """
    sections = sdp.replace("\r\n", "\n").split("\nm=")[1:]
    return {index for index, text in enumerate(sections) if "\na=bundle-only" in text}


def _section(
    media: MediaDescription, sources: dict[str, str], *, bundle_only: bool = False
) -> MediaSection:
    """One m-line: its direction, the codecs we share and what it carries."""
    if media.kind == "application":
        return MediaSection(media.rtp.muxId, media.kind, "sendrecv", ())
    supported = supported_codecs(media.kind)
    if not supported:
        raise ProtocolError("unsupported_sdp", f"unsupported media kind {media.kind!r}")
    if media.port == 0 and not bundle_only:
        raise ProtocolError(
            "unsupported_sdp",
            "stopped transceivers are not supported; set their direction to inactive",
        )
    common = common_codecs(media.kind, media.rtp.codecs)
    names = tuple(codec.mimeType for codec in common if not codec.mimeType.endswith("/rtx"))
    if not names:
        offered = ", ".join(sorted({c.mimeType for c in media.rtp.codecs})) or "none"
        raise ProtocolError(
            "no_usable_codec",
            f"no {media.kind} codec in common (offered: {offered}; "
            f"supported: {', '.join(c.mimeType for c in supported)})",
        )
    source = sources.get(media.rtp.muxId, SOURCES[media.kind][0])
    if source not in SOURCES[media.kind]:
        raise ProtocolError("bad_request", f"a {media.kind} m-line cannot carry {source!r}")
    return MediaSection(media.rtp.muxId, media.kind, media.direction or "sendrecv", names, source)


def stream_ids_by_mid(sdp: str) -> dict[str, str]:
    """The MediaStream id (first field of ``a=msid``) of each m-line of a description.

    Read from the text the client actually receives, so that what was announced is
    known for certain, whatever changed on the server while the answer was made.
    """
    ids: dict[str, str] = {}
    for section in sdp.split("\nm=")[1:]:
        attributes = dict(
            line[2:].rstrip("\r").split(":", 1)
            for line in section.split("\n")
            if line.startswith("a=") and ":" in line
        )
        if "mid" in attributes and "msid" in attributes:
            ids[attributes["mid"]] = attributes["msid"].split()[0]
    return ids


def parse_candidate(candidate: IceCandidate) -> RTCIceCandidate | None:
    """An aiortc candidate from a browser's, or None when it marks the end of gathering."""
    text = candidate.candidate.strip()
    if not text:
        return None
    check_candidate(text)
    text = text.removeprefix("candidate:")
    try:
        parsed = parse_candidate_line(text)
    except (AssertionError, ValueError, IndexError) as exc:
        raise ProtocolError("invalid_candidate", f"unreadable ICE candidate ({exc!r})") from None
    if candidate.sdp_mid is None and candidate.sdp_mline_index is None:
        raise ProtocolError("invalid_candidate", "a candidate needs sdpMid or sdpMLineIndex")
    parsed.sdpMid = candidate.sdp_mid
    parsed.sdpMLineIndex = candidate.sdp_mline_index
    return parsed

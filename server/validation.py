"""Checks for everything a client sends; a failed check raises :class:`ProtocolError`.

Handlers never trust argument counts, types or sizes: every value coming from
Socket.IO passes through one of these functions first.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_ROOM_NAME = 128
MAX_NICKNAME = 64
MAX_MESSAGE_BYTES = 4 * 1024
MAX_SDP_BYTES = 64 * 1024
MAX_CANDIDATE_BYTES = 1024
MAX_MID = 32
MAX_UFRAG = 256
# What a published track carries (native offers name them per m-line; see docs/protocol.md).
SOURCES = {"audio": ("microphone", "screen_audio"), "video": ("camera", "screen")}
MAX_SOURCES = 64


class ProtocolError(Exception):
    """A client request that cannot be honoured; reported back to that client only."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> ProtocolError:
    return ProtocolError("bad_request", message)


def expect_args(args: Sequence[Any], minimum: int, maximum: int | None = None) -> None:
    """Reject calls whose argument count is outside ``minimum..maximum``."""
    maximum = minimum if maximum is None else maximum
    if not minimum <= len(args) <= maximum:
        expected = str(minimum) if minimum == maximum else f"{minimum} to {maximum}"
        raise bad_request(f"expected {expected} argument(s), got {len(args)}")


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf") for char in text)


def bounded_text(value: Any, what: str, max_bytes: int, *, allow_empty: bool = False) -> str:
    """A string of at most ``max_bytes`` UTF-8 bytes."""
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a string")
    if not value and not allow_empty:
        raise bad_request(f"{what} must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("too_large", f"{what} is longer than {max_bytes} bytes")
    return value


def _short_name(value: Any, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a string")
    name = value.strip()
    if not name:
        raise ProtocolError(f"invalid_{what.replace(' ', '_')}", f"{what} must not be empty")
    if len(name) > max_chars:
        raise ProtocolError("too_large", f"{what} is longer than {max_chars} characters")
    if _has_control_characters(name):
        raise ProtocolError(
            f"invalid_{what.replace(' ', '_')}", f"{what} contains control characters"
        )
    return name


def room_name(value: Any) -> str:
    """A room name: 1-128 printable characters, case-sensitive, outer spaces trimmed."""
    return _short_name(value, "room name", MAX_ROOM_NAME)


def nickname(value: Any) -> str:
    """A nickname: 1-64 printable characters, outer spaces trimmed."""
    return _short_name(value, "nickname", MAX_NICKNAME)


MAX_RESUME_TOKEN = 64
_RESUME_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def resume_token(value: Any) -> str:
    """A resume token from an earlier join ack (URL-safe characters, at most 64)."""
    if not isinstance(value, str) or not _RESUME_TOKEN.fullmatch(value):
        raise bad_request("resume must be the resume_token of an earlier join")
    if len(value) > MAX_RESUME_TOKEN:
        raise ProtocolError("too_large", f"resume is longer than {MAX_RESUME_TOKEN} characters")
    return value


def chat_text(value: Any) -> str:
    """A chat message: a non-empty string of at most 4 KiB."""
    return bounded_text(value, "message", MAX_MESSAGE_BYTES)


def session_description(value: Any, expected_type: str) -> dict[str, Any]:
    """An ``RTCSessionDescriptionInit`` of the given type with an SDP of at most 64 KiB.

    A native offer may add ``sources``: what each of its sending m-lines carries.
    """
    if not isinstance(value, dict):
        raise bad_request(f"{expected_type} must be an object {{type, sdp}}")
    if value.get("type") != expected_type:
        raise bad_request(f"{expected_type}.type must be {expected_type!r}")
    sdp = bounded_text(value.get("sdp"), f"{expected_type}.sdp", MAX_SDP_BYTES)
    if not sdp.startswith("v=0"):
        raise ProtocolError("invalid_sdp", f"{expected_type}.sdp is not an SDP document")
    if value.get("sources") is not None:
        return {"type": expected_type, "sdp": sdp, "sources": publication_sources(value["sources"])}
    return {"type": expected_type, "sdp": sdp}


def publication_sources(value: Any) -> dict[str, str]:
    """``{mid: source}`` with known sources (``camera``, ``screen``…) and short mids."""
    known = {source for sources in SOURCES.values() for source in sources}
    if not isinstance(value, dict) or len(value) > MAX_SOURCES:
        raise bad_request(f"sources must be an object of at most {MAX_SOURCES} mid: source pairs")
    for mid, source in value.items():
        if not isinstance(mid, str) or len(mid) > MAX_MID or source not in known:
            raise bad_request(f"sources maps mids to one of {', '.join(sorted(known))}")
    return dict(value)


@dataclass(frozen=True)
class IceCandidate:
    """A browser ICE candidate as sent by ``RTCPeerConnection.onicecandidate``."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None
    username_fragment: str | None

    def as_dict(self) -> dict[str, Any]:
        """The ``RTCIceCandidateInit`` form, for passing the candidate on unchanged."""
        return {
            "candidate": self.candidate,
            "sdpMid": self.sdp_mid,
            "sdpMLineIndex": self.sdp_mline_index,
            "usernameFragment": self.username_fragment,
        }


def _optional_string(value: Any, what: str, max_chars: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise bad_request(f"{what} must be a string of at most {max_chars} characters or null")
    return value


def ice_candidate(value: Any) -> IceCandidate | None:
    """A candidate object, or None for the end of gathering."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("candidate must be an object or null")
    text = bounded_text(
        value.get("candidate", ""), "candidate.candidate", MAX_CANDIDATE_BYTES, allow_empty=True
    )
    index = value.get("sdpMLineIndex")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024
    ):
        raise bad_request("candidate.sdpMLineIndex must be a small non-negative integer or null")
    return IceCandidate(
        candidate=text,
        sdp_mid=_optional_string(value.get("sdpMid"), "candidate.sdpMid", MAX_MID),
        sdp_mline_index=index,
        username_fragment=_optional_string(
            value.get("usernameFragment"), "candidate.usernameFragment", MAX_UFRAG
        ),
    )


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{what} must be true or false")
    return value


def mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be an object")
    return value

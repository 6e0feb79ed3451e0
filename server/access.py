"""Who may connect, join which room, and under which name: access tokens (JWT, HS256).

An open server (the quick start) lets anyone in anywhere. A token server needs a
token signed with one of its API secrets to join a room, except rooms the
operator marks open (zoom-clone clients cannot send a token). A token that is
presented is always checked: a bad one refuses the connection, so nothing
changes, and the client hears why.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import jwt

from . import validation
from .grants import NO_GRANT, OPEN_GRANT, Grant, GrantError, grant_from_claims
from .rooms import Participant
from .settings import Settings
from .validation import ProtocolError

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32  # HS256 wants a key at least as long as its hash
MAX_TOKEN_LENGTH = 4096
CLOCK_LEEWAY = 10.0  # seconds of clock difference tolerated on exp/nbf


class AccessError(Exception):
    """A token was refused: ``code`` is ``unauthorized`` or ``token_expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def payload(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def api_keys(settings: Settings) -> dict[str, str]:
    """Every API key and its secret; raises ValueError for short or duplicate ones."""
    pairs = list(settings.api_keys)
    if settings.api_key or settings.api_secret:
        if not (settings.api_key and settings.api_secret):
            raise ValueError("--api-key and --api-secret go together")
        pairs.insert(0, (settings.api_key, settings.api_secret))
    keys: dict[str, str] = {}
    for key, secret in pairs:
        if key in keys:
            raise ValueError(f"API key {key!r} is given twice")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the secret of API key {key!r} is shorter than {MIN_SECRET_LENGTH} characters"
            )
        keys[key] = secret
    return keys


def issue_token(key: str, secret: str, claims: Mapping[str, Any], ttl: float) -> str:
    """A signed token with ``claims``, valid from now for ``ttl`` seconds."""
    now = int(time.time())
    payload = {**claims, "iss": key, "nbf": now, "exp": now + int(ttl)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


class AccessControl:
    """Checks tokens and decides who may join which room."""

    def __init__(
        self, *, token_required: bool, keys: dict[str, str], open_rooms: tuple[str, ...]
    ) -> None:
        if token_required and not keys:
            raise ValueError("--auth token needs an API key (--api-key/--api-secret or --api-keys)")
        self.token_required = token_required
        self._keys = keys
        self._open_rooms = open_rooms
        self._locked: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessControl:
        keys = api_keys(settings)
        required = settings.auth == "token" or (settings.auth == "auto" and bool(keys))
        return cls(token_required=required, keys=keys, open_rooms=settings.open_rooms)

    def signing_key(self) -> tuple[str, str] | None:
        """The first API key and its secret (webhooks are signed with it), if any."""
        return next(iter(self._keys.items()), None)

    @property
    def mode(self) -> str:
        return "token" if self.token_required else "open"

    # -- tokens --------------------------------------------------------------------------

    def verify(self, token: Any) -> Grant:
        """The grant of a valid token; raises AccessError saying what is wrong with it."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise AccessError("unauthorized", "the access token must be a non-empty string")
        if not self._keys:
            raise AccessError("unauthorized", "this server has no API keys to check tokens with")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AccessError("unauthorized", "the access token is not a JWT") from None
        secret = self._keys.get(str(unverified.get("iss")))
        if secret is None:
            raise AccessError("unauthorized", "the access token names an unknown API key ('iss')")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iss", "sub"]},
                leeway=CLOCK_LEEWAY,
            )
            grant = grant_from_claims(claims)
        except jwt.ExpiredSignatureError:
            raise AccessError("token_expired", "the access token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AccessError("unauthorized", "the access token is not valid yet ('nbf')") from None
        except jwt.InvalidSignatureError:
            raise AccessError("unauthorized", "the access token's signature is wrong") from None
        except (jwt.PyJWTError, GrantError) as exc:
            raise AccessError("unauthorized", f"the access token is invalid: {exc}") from None
        if grant.nickname is not None:
            try:
                validation.nickname(grant.nickname)
            except ProtocolError as error:
                raise AccessError("unauthorized", f"the token's name: {error.message}") from None
        return grant

    def connection_grant(self, auth: Any, query_string: str) -> Grant:
        """The grant of a new connection: its token's, or what tokenless clients get.

        The token comes from the Socket.IO ``auth`` payload (``{token}``) or the
        ``?token=`` query of the connection URL (the bundled page's links).
        """
        token = auth.get("token") if isinstance(auth, dict) else None
        if token is None:
            token = next(iter(parse_qs(query_string).get("token", [])), None)
        if token is not None:
            return self.verify(token)
        return NO_GRANT if self.token_required else OPEN_GRANT

    # -- rooms ---------------------------------------------------------------------------

    def is_open(self, room: str) -> bool:
        """Whether anyone may join (and list) ``room`` without a token."""
        if not self.token_required:
            return True
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self._open_rooms)

    def check_join(self, grant: Grant, room: str) -> None:
        """Raise ProtocolError unless ``grant`` lets its holder into ``room``."""
        if room in self._locked and not self.is_admin(grant, room):
            raise ProtocolError("room_locked", f"room {room!r} is locked by its host")
        if self.is_open(room):
            return
        if grant.identity is None:
            raise ProtocolError("unauthorized", f"room {room!r} needs an access token")
        if not grant.room_join:
            raise ProtocolError("forbidden", "your access token does not allow joining rooms")
        if not grant.covers(room):
            raise ProtocolError("forbidden", f"your access token is for room {grant.room!r}")

    def is_admin(self, grant: Grant, room: str) -> bool:
        return grant.room_admin and grant.covers(room)

    def set_locked(self, room: str, locked: bool) -> None:
        if locked:
            self._locked.add(room)
        else:
            self._locked.discard(room)

    def is_locked(self, room: str) -> bool:
        return room in self._locked

    def room_emptied(self, room: str) -> None:
        """An empty room disappears, and its lock with it."""
        self._locked.discard(room)

    def may_see(self, grant: Grant, room: str) -> bool:
        """Whether ``room`` (its name, people and transcript) may be shown to ``grant``."""
        return grant.room_list or self.is_open(room) or (grant.room_join and grant.covers(room))

    def visible_rooms(self, grant: Grant, rooms: list[str]) -> list[str]:
        return [room for room in rooms if self.may_see(grant, room)]

    def request_grant(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Grant:
        """The grant of an HTTP request: ``Authorization: Bearer`` or ``?token=``."""
        authorization = headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if authorization and scheme.lower() != "bearer":
            raise AccessError("unauthorized", "use 'Authorization: Bearer <token>'")
        token = credentials.strip() or query.get("token")
        if token is not None:
            return self.verify(token)
        return NO_GRANT if self.token_required else OPEN_GRANT


def rename(participant: Participant, requested: Any, *, strict: bool = True) -> None:
    """Change the nickname, unless a token fixed it.

    Then a ``nickname`` event (``strict``) is refused, while a join that also
    names someone (a page sends its remembered name) keeps the token's name.
    """
    name = validation.nickname(requested)
    if participant.grant.identity is None:
        participant.nickname = name
    elif strict and name != participant.nickname:
        raise ProtocolError("forbidden", "your nickname is set by your access token")

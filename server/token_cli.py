"""``roomrelay token``: print an access token signed with the server's API key."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence

from .access import api_keys, issue_token
from .grants import ANY_ROOM, claims_for
from .settings import load_settings

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``6h`` or ``7d``."""
    match = DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration like 30m, 6h or 7d: {text!r}")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomrelay token",
        description="Print an access token. The key is the server's: --api-key/--api-secret, "
        "else API_KEY/API_SECRET, else the first of API_KEYS.",
    )
    parser.add_argument("--room", required=True, help=f"room name, or {ANY_ROOM!r} for any room")
    parser.add_argument("--identity", required=True, help="who the holder is (the 'sub' claim)")
    parser.add_argument("--name", help="nickname others see (default: the identity)")
    parser.add_argument("--ttl", type=duration, default=duration("6h"), help="validity (6h)")
    parser.add_argument("--admin", action="store_true", help="may moderate the room")
    parser.add_argument("--list", action="store_true", help="may list every room")
    parser.add_argument("--hidden", action="store_true", help="invisible to the others")
    parser.add_argument("--no-publish", action="store_true", help="may not send media")
    parser.add_argument("--no-subscribe", action="store_true", help="may not receive media")
    parser.add_argument("--no-chat", action="store_true", help="may not send chat messages")
    parser.add_argument("--api-key", help="API key name (prefer the environment)")
    parser.add_argument("--api-secret", help="its secret (prefer the environment)")
    return parser


def token_main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    overrides = {"API_KEY": args.api_key, "API_SECRET": args.api_secret}
    env = {**environ, **{name: value for name, value in overrides.items() if value}}
    try:
        keys = api_keys(load_settings([], env))
    except ValueError as exc:
        raise SystemExit(f"roomrelay token: {exc}") from None
    if not keys:
        raise SystemExit("roomrelay token: no API key (set API_KEY and API_SECRET)")
    key, secret = next(iter(keys.items()))
    claims = claims_for(
        identity=args.identity,
        room=args.room,
        name=args.name,
        admin=args.admin,
        can_publish=not args.no_publish,
        can_subscribe=not args.no_subscribe,
        can_publish_data=not args.no_chat,
        room_list=args.list,
        hidden=args.hidden,
    )
    sys.stdout.write(issue_token(key, secret, claims, args.ttl) + "\n")

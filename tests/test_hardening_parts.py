"""The hardening building blocks on their own: log throttling, admission, TURN, hosts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging

from server.admission import Admission
from server.http_security import host_allowed, origin_checker, same_origin
from server.logthrottle import RepeatFilter
from server.turn import IceServerList, turn_credentials


def record(message: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("x", level, __file__, 1, message, args, None)


def test_repeat_filter_lets_a_few_through_then_reports_the_rest():
    now = [0.0]
    repeat = RepeatFilter(burst=3, window=10.0, clock=lambda: now[0])
    passed = [repeat.filter(record("dropped %s", i)) for i in range(100)]
    assert passed.count(True) == 3
    assert repeat.filter(record("another template"))
    assert repeat.filter(record("info passes", level=logging.INFO))
    now[0] = 10.5
    summary = record("dropped %s", 100)
    assert repeat.filter(summary)
    assert "[97 similar messages suppressed]" in summary.getMessage()


def test_admission_counts_per_address_and_forgets_vanished_sessions():
    admission = Admission(max_connections=3, max_per_address=2)
    assert admission.admit("a", "10.0.0.1", {"a"}) is None
    assert admission.admit("b", "10.0.0.1", {"a", "b"}) is None
    assert admission.admit("c", "10.0.0.1", {"a", "b", "c"}).reason == "address_full"
    assert admission.admit("d", "10.0.0.2", {"a", "b", "d"}) is None
    assert admission.admit("e", "10.0.0.3", {"a", "b", "d", "e"}).reason == "server_full"
    # "b" vanished without a disconnect event: it no longer counts.
    assert admission.admit("f", "10.0.0.1", {"a", "d", "f"}) is None
    admission.release("a")
    admission.release("a")  # twice is harmless
    assert admission.stats()["connections"] == 2
    assert Admission(0, 0).admit("x", "y", ()) is None  # 0: no limits


def test_turn_rest_credentials_match_coturns_scheme():
    username, credential = turn_credentials("secret", "peer1", 3600, now=1_000_000.0)
    assert username == "1003600:peer1"
    digest = hmac.new(b"secret", b"1003600:peer1", hashlib.sha1).digest()
    assert credential == base64.b64encode(digest).decode()


def test_only_credential_less_turn_entries_get_ephemeral_credentials():
    servers = (
        {"urls": "stun:s.example"},
        {"urls": ["turn:t.example", "turns:t.example:5349"]},
        {"urls": "turn:static.example", "username": "u", "credential": "p"},
    )
    listed = IceServerList(servers, "k", 60, clock=lambda: 100.0).for_client("me")
    assert listed[0] == servers[0] and listed[2] == servers[2]
    assert listed[1]["username"] == "160:me" and listed[1]["credential"]
    assert IceServerList(servers).for_client("me") == list(servers)
    assert IceServerList(servers, "k").for_server() == (servers[0], servers[2])


def test_host_and_origin_matching():
    allowed = {"meet.example.org", "127.0.0.1:8000"}
    assert host_allowed("meet.example.org:8443", allowed)
    assert host_allowed("MEET.example.org.", allowed)
    assert host_allowed("127.0.0.1:8000", allowed)
    assert not host_allowed("127.0.0.1:9000", allowed)
    assert not host_allowed("rebound.example", allowed)
    assert host_allowed("anything", ())
    assert same_origin("https://meet.example.org", "meet.example.org")
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not same_origin("http://127.0.0.1:9000", "127.0.0.1:8000")
    assert not same_origin("null", "meet.example.org")
    check = origin_checker(["https://app.example.com"])
    assert check("https://app.example.com", {"HTTP_HOST": "meet.example.org"})
    assert check("https://meet.example.org", {"HTTP_HOST": "meet.example.org"})
    assert not check("https://evil.example", {"HTTP_HOST": "meet.example.org"})

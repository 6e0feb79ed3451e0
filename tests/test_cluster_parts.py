"""The cluster's member mirror on its own: versions, gaps, nodes that go away."""

from __future__ import annotations

import asyncio

import pytest
import socketio

from server.cluster.members import MemberMirror
from server.ratelimit import TokenBucket
from server.resumption import Resumptions
from server.rooms import Dialect, Participant, Roster
from server.settings import load_settings


def member(peer_id: str, nickname: str, dialect: str = "native", outside: bool = False) -> dict:
    return {
        "sid": f"sid-{peer_id}",
        "peer_id": peer_id,
        "nickname": nickname,
        "dialect": dialect,
        "audio": True,
        "video": False,
        "hidden": False,
        "identity": None,
        "outside": outside,
    }


async def nothing(room: str) -> None:
    return None


def mirror(sent: list | None = None) -> MemberMirror:
    outbox = sent if sent is not None else []
    return MemberMirror("me", nothing, lambda node, message: outbox.append((node, message)))


def test_room_updates_in_order_and_a_missed_one_makes_the_next_list_count():
    members = mirror()
    members.apply_all("b", 3, {"r": [member("1", "Ann")]})
    members.apply_room("b", 4, "r", [member("1", "Ann"), member("2", "Bob")])
    assert [p.nickname for p in members.members("r")] == ["Ann", "Bob"]
    assert members.version_of("b") == 4
    members.apply_all("b", 3, {"r": [member("1", "Ann")]})  # older: ignored
    assert len(members.members("r")) == 2

    members.apply_room("b", 6, "s", [member("3", "Cy")])  # 5 was missed
    assert members.rooms() == {"r", "s"} and members.version_of("b") == 4
    members.apply_all("b", 6, {"s": [member("3", "Cy")]})  # the whole list repairs it
    assert members.rooms() == {"s"} and members.version_of("b") == 6
    assert members.by_peer_id("3").node == "b"


def test_own_updates_are_ignored_and_gone_nodes_give_back_their_participants():
    members = mirror()
    members.apply_room("me", 1, "r", [member("0", "Self")])
    members.apply_all("b", 1, {"r": [member("1", "Ann", "chat")]})
    members.apply_all("c", 1, {"r": [member("2", "Bob")]})
    assert sorted(p.nickname for p in members.members("r")) == ["Ann", "Bob"]
    gone = members.keep_only(["c"])
    assert [(p.nickname, p.room, p.dialect) for p in gone] == [("Ann", "r", Dialect.CHAT)]
    assert [p.nickname for p in members.members("r")] == ["Bob"]


async def test_events_for_members_outside_socketio_go_to_their_nodes_only():
    sent: list = []
    members = mirror(sent)
    members.apply_all("b", 1, {"r": [member("1", "Ws", "ws", outside=True)]})
    members.apply_all("c", 1, {"r": [member("2", "Nat")]})
    await members.deliver_outside("r", Dialect.WS, "user_joined", {"peer_id": "9"}, None)
    await members.deliver_outside("r", Dialect.NATIVE, "user_joined", {"peer_id": "9"}, None)
    await members.deliver_outside("r", Dialect.WS, "user_left", {"peer_id": "9"}, "sid-1")
    assert [(node, m["event"], m["dialect"]) for node, m in sent] == [("b", "user_joined", "ws")]


def test_the_redis_url_must_be_a_redis_url(capsys):
    assert load_settings(["--redis-url", "redis://10.0.0.5:6379/0"]).redis_url.endswith("/0")
    assert load_settings([], {"REDIS_URL": ""}).redis_url == ""
    with pytest.raises(SystemExit):
        load_settings(["--redis-url", "http://10.0.0.5:6379"])
    with pytest.raises(SystemExit):
        load_settings([], {"REDIS_URL": "10.0.0.5:6379"})
    assert "expected a redis://, rediss:// or unix:// URL" in capsys.readouterr().err


async def test_a_room_event_still_goes_out_when_this_node_knows_no_other_member_yet():
    """A participant who just joined on another node may not be in this node's view yet
    (its update is still on the bus): the emit must not be dropped as having nobody to
    reach, or, say, the welcome that starts a zoom-clone call is lost for good."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    emitted: list[tuple[str, str, list]] = []

    async def emit(event: str, data: object = None, to: str = "", **options: object) -> None:
        emitted.append((event, to, list(options.get("skip_sid") or [])))

    sio.emit = emit  # type: ignore[method-assign]
    roster = Roster(sio, max_per_room=4)
    roster.others = mirror()  # a view of the other nodes that has not caught up
    await roster.emit_to_dialect("r", Dialect.VIDEO, "welcome", skip="joiner")
    assert emitted == [("welcome", "r", [])]


async def held_participant(leave) -> tuple[Resumptions, Participant, str]:
    """A native participant of room "r" whose connection dropped: its place is held."""
    roster = Roster(socketio.AsyncServer(async_mode="aiohttp"), max_per_room=4)
    resumptions = Resumptions(roster, grace=30, leave=leave)
    participant = Participant(sid="s1", limiter=TokenBucket(1, 1), dialect=Dialect.NATIVE)
    roster.add(participant)
    participant.room = "r"
    token = resumptions.issue(participant)
    assert token and resumptions.hold(participant, "ping timeout")
    return resumptions, participant, token


async def test_a_place_promised_to_another_node_and_never_taken_ends_like_a_lapsed_hold():
    left: list[Participant] = []

    async def leave(participant: Participant) -> None:
        left.append(participant)

    resumptions, ann, token = await held_participant(leave)
    assert resumptions.reserve(token, "r", None, timeout=0.05) is ann
    assert resumptions.reserve(token, "r", None, timeout=0.05) is None  # the token is used up
    await asyncio.sleep(0.3)
    assert left == [ann] and resumptions.hand_over(ann.peer_id) is None  # too late

    resumptions, bob, token = await held_participant(leave)
    assert resumptions.reserve(token, "r", None, timeout=0.05) is bob
    assert resumptions.hand_over(bob.peer_id) is bob  # taken in time: nobody leaves
    await asyncio.sleep(0.3)
    assert left == [ann] and resumptions.stats()["handed_over"] == 1

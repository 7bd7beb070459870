"""streams_layer.groups: reading ZRANGE replies and sorting members by destination (no Redis)."""

from __future__ import annotations

import pytest

from streams_layer import groups as groups_module
from streams_layer.config import GROUP_CACHE_MIN_MEMBERS
from streams_layer.groups import GroupMembers, make_plan, parse_members

A = "a" * 32
B = "b" * 32


def _same_capacity(channels: list[str]) -> str:
    return "100"


def test_parse_members_takes_the_flat_and_the_paired_reply() -> None:
    flat = [b"x.one", b"10", b"x.two", b"12.5"]
    paired = [[b"x.one", 10.0], [b"x.two", 12.5]]
    expected = (["x.one", "x.two"], [10.0, 12.5])
    assert parse_members(flat) == expected
    assert parse_members(paired) == expected
    assert parse_members(None) == ([], [])


def test_plan_sorts_members_by_inbox_and_keeps_normal_channels_apart() -> None:
    members = [f"specific.{A}!1", "normal.one", f"specific.{B}!2", f"chat.{A}!3"]
    plan = make_plan(members, _same_capacity)
    assert plan.normal == ("normal.one",)
    assert {(b.client, b.channels, b.size) for b in plan.inboxes} == {
        (A, f"specific.{A}!1,chat.{A}!3", 2),
        (B, f"specific.{B}!2", 1),
    }
    assert plan.size == 4


def _reply(count: int, score: float) -> list[bytes]:
    flat: list[bytes] = []
    for n in range(count):
        flat += [f"specific.{A}!{n}".encode(), str(score).encode()]
    return flat


def test_large_group_is_kept_until_its_version_changes() -> None:
    groups = GroupMembers(_same_capacity)
    plan = groups.store("room", b"7", _reply(GROUP_CACHE_MIN_MEMBERS, 100), since=50)
    assert groups.is_kept("room")
    assert groups.plan("room", b"7", since=50) is plan
    assert groups.plan("room", b"8", since=50) is None
    assert groups.plan("room", None, since=50) is None


def test_small_group_or_one_without_version_is_not_kept() -> None:
    groups = GroupMembers(_same_capacity)
    groups.store("small", b"1", _reply(GROUP_CACHE_MIN_MEMBERS - 1, 100), since=50)
    groups.store("unversioned", None, _reply(GROUP_CACHE_MIN_MEMBERS, 100), since=50)
    assert not groups.is_kept("small")
    assert not groups.is_kept("unversioned")


def test_kept_members_lapse_by_their_scores() -> None:
    groups = GroupMembers(_same_capacity)
    older = _reply(GROUP_CACHE_MIN_MEMBERS, 100)
    newer = [f"specific.{B}!late".encode(), b"200"]
    groups.store("room", b"1", older + newer, since=50)
    later = groups.plan("room", b"1", since=150)
    assert later is not None
    assert [(b.client, b.channels) for b in later.inboxes] == [(B, f"specific.{B}!late")]
    gone = groups.plan("room", b"1", since=201)
    assert gone is not None
    assert gone.size == 0


def test_kept_members_stay_within_the_member_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groups_module, "GROUP_CACHE_MEMBERS", 3 * GROUP_CACHE_MIN_MEMBERS)
    groups = GroupMembers(_same_capacity)
    for name in ("one", "two", "three"):
        groups.store(name, b"1", _reply(GROUP_CACHE_MIN_MEMBERS, 100), since=50)
    assert all(groups.is_kept(name) for name in ("one", "two", "three"))
    groups.store("three", b"2", _reply(GROUP_CACHE_MIN_MEMBERS, 100), since=50)
    assert groups.is_kept("one")  # reading a kept group again does not count it twice
    groups.store("four", b"1", _reply(GROUP_CACHE_MIN_MEMBERS, 100), since=50)
    assert [groups.is_kept(n) for n in ("one", "two", "three", "four")] == [
        False,
        False,
        False,
        True,
    ]
    groups.store("huge", b"1", _reply(3 * GROUP_CACHE_MIN_MEMBERS + 1, 100), since=50)
    assert not groups.is_kept("huge")
    assert groups.is_kept("four")

"""Large groups: group_send keeps their members between sends, never a stale set.

A group of GROUP_CACHE_MIN_MEMBERS or more is read once and then checked by
its version key; every change made by any layer instance (group_add,
group_discard, a member's lapse, flush) must still reach the next send.
"""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

import pytest
import redis.asyncio

import streams_layer.connection
from streams_layer.config import GROUP_CACHE_MIN_MEMBERS
from tests.layer_helpers import LayerFactory, receive_within, receives_nothing

LARGE = GROUP_CACHE_MIN_MEMBERS + 8


async def _large_group(owner: Any, adder: Any, group: str) -> list[str]:
    """LARGE channels of ``owner``, added to ``group`` by ``adder``."""
    members = [await owner.new_channel() for _ in range(LARGE)]
    for channel in members:
        await adder.group_add(group, channel)
    return members


async def _receive_all(layer: Any, channels: list[str]) -> list[Any]:
    return list(await asyncio.gather(*(receive_within(layer, c) for c in channels)))


async def _send_and_receive(sender: Any, owner: Any, channels: list[str], n: int) -> None:
    """``sender`` sends message ``n`` to "room"; every one of ``channels`` of ``owner`` gets it."""
    await sender.group_send("room", {"type": "x", "n": n})
    assert [m["n"] for m in await _receive_all(owner, channels)] == [n] * len(channels)


async def _kept_by_sender(make_layer: LayerFactory) -> tuple[Any, Any, Any, list[str]]:
    """(owner, sender, other, members): a large "room" of ``owner``'s channels,
    added by ``other``, that ``sender`` has sent message 1 to and so keeps."""
    owner, sender, other = make_layer(), make_layer(), make_layer()
    members = await _large_group(owner, other, "room")
    await _send_and_receive(sender, owner, members, 1)
    return owner, sender, other, members


async def test_member_added_elsewhere_gets_the_next_group_message(
    make_layer: LayerFactory,
) -> None:
    owner, sender, other, members = await _kept_by_sender(make_layer)
    late = await owner.new_channel()
    await other.group_add("room", late)
    await _send_and_receive(sender, owner, [*members, late], 2)


async def test_member_discarded_elsewhere_misses_the_next_group_message(
    make_layer: LayerFactory,
) -> None:
    owner, sender, other, members = await _kept_by_sender(make_layer)
    leaving = members.pop()
    await other.group_discard("room", leaving)
    await _send_and_receive(sender, owner, members, 2)
    assert await receives_nothing(owner, leaving)


async def test_members_lapse_by_group_expiry_between_sends(make_layer: LayerFactory) -> None:
    group_expiry_s = 2
    owner = make_layer(group_expiry=group_expiry_s)
    sender = make_layer(group_expiry=group_expiry_s)
    members = await _large_group(owner, owner, "room")
    await _send_and_receive(sender, owner, members, 1)
    # Nobody changes the group: its members lapse. Its keys expire with them,
    # so the sender reads it again; kept members lapsing while the group
    # lives on: test_members_lapse_by_their_own_age_while_the_group_lives_on.
    await asyncio.sleep(group_expiry_s + 1.2)
    await sender.group_send("room", {"type": "x", "n": 2})
    assert await receives_nothing(owner, members[0])
    assert await receives_nothing(owner, members[-1])


async def test_members_lapse_by_their_own_age_while_the_group_lives_on(
    make_layer: LayerFactory,
) -> None:
    # Scores are whole seconds of server time: a member added at t lapses
    # between t + group_expiry and t + group_expiry + 1. The group's keys
    # live group_expiry after its last change, so the older members lapse
    # while the sender's kept version is still current.
    group_expiry_s = 3
    owner = make_layer(group_expiry=group_expiry_s)
    sender = make_layer(group_expiry=group_expiry_s)
    older = await _large_group(owner, owner, "room")
    await asyncio.sleep(1.5)
    newer = await _large_group(owner, owner, "room")
    await _send_and_receive(sender, owner, older + newer, 1)
    await asyncio.sleep(2.5)
    await _send_and_receive(sender, owner, newer, 2)
    assert await receives_nothing(owner, older[0])
    assert await receives_nothing(owner, older[-1])


async def test_refreshed_members_outlive_their_first_add(make_layer: LayerFactory) -> None:
    # A refresh (group_add of a member again) must reach a sender that keeps
    # the group: its kept score would have the member lapse.
    group_expiry_s = 3
    owner = make_layer(group_expiry=group_expiry_s)
    sender = make_layer(group_expiry=group_expiry_s)
    members = await _large_group(owner, owner, "room")
    await asyncio.sleep(2.0)
    newcomer = await owner.new_channel()
    await owner.group_add("room", newcomer)
    await _send_and_receive(sender, owner, [*members, newcomer], 1)
    await asyncio.sleep(0.4)
    for channel in members:
        await owner.group_add("room", channel)
    await asyncio.sleep(1.8)  # past the first adds' lapse, within the newcomer's
    await _send_and_receive(sender, owner, [*members, newcomer], 2)


async def test_group_rebuilt_after_flush_elsewhere_is_read_again(
    make_layer: LayerFactory,
) -> None:
    owner, sender, other, first = await _kept_by_sender(make_layer)
    await other.flush()
    second = await _large_group(owner, other, "room")
    await _send_and_receive(sender, owner, second, 2)
    assert await receives_nothing(owner, first[0])


@pytest.mark.standalone_only(reason="counts commands with INFO commandstats of one server")
async def test_unchanged_large_group_is_not_read_again(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis
) -> None:
    owner, sender = make_layer(), make_layer()
    members = await _large_group(owner, owner, "room")
    await _send_and_receive(sender, owner, members, 1)
    before = await _calls(redis_client, "zrange")
    for n in range(2, 5):
        await _send_and_receive(sender, owner, members, n)
    assert await _calls(redis_client, "zrange") == before


async def _calls(client: redis.asyncio.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


@pytest.mark.parametrize("skew_s", [-40.0, 40.0])
async def test_membership_age_follows_the_servers_clock_in_a_loop_that_only_sends(
    make_layer: LayerFactory, monkeypatch: pytest.MonkeyPatch, skew_s: float
) -> None:
    """A sender whose clock is off by more than group_expiry neither drops a
    fresh member (clock ahead) nor reaches a lapsed one (clock behind)."""
    member = make_layer(group_expiry=30)
    fresh = await member.new_channel()
    lapsed = await member.new_channel()
    await member.group_add("room", fresh)
    await member.group_add("room", lapsed)
    await _age_membership(member, "room", lapsed, 31)
    sender = make_layer(group_expiry=30)  # has read nothing: no server time seen
    skewed = types.SimpleNamespace(time=lambda: time.time() + skew_s)
    monkeypatch.setattr(streams_layer.connection, "time", skewed)
    await sender.group_send("room", {"type": "g"})
    monkeypatch.undo()
    assert await receive_within(member, fresh) == {"type": "g"}
    assert await receives_nothing(member, lapsed)


async def _age_membership(layer: Any, group: str, channel: str, seconds: int) -> None:
    """Make ``channel``'s membership of ``group`` look ``seconds`` old (server time)."""
    client = layer._state().shards.client(group)
    server_s, _ = await client.time()
    await client.zadd(layer.keys.group(group), {channel: server_s - seconds})
